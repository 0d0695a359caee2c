//! What dashboards need, against the real things: promtool on the alerting rules (and their unit
//! tests), the Grafana dashboard's JSON checked for what Grafana's import needs, and a real
//! Prometheus (Debian's, `make setup` installs it) scraping a real ckptd over its TCP listener
//! with the bearer token file: after a scenario, every query of every panel returns data and the
//! failing-schedule alert is pending or firing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ckptd_api::{CreateSchedule, RestoreRequest, Retention, ScheduleOptions, Target as ApiTarget};
use ckptd_tests::{free_port, wait_until_serving, Daemon, Target};
use serde_json::Value;

fn dashboards() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards")
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .expect("the command runs (make setup installs prometheus)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?}: {text}");
    text
}

#[test]
fn the_alerting_rules_pass_promtool_and_their_unit_tests() {
    let dir = dashboards().join("prometheus");
    let checked = run(Command::new("promtool")
        .args(["check", "rules", "ckptd-rules.yml"])
        .current_dir(&dir));
    assert!(checked.contains("SUCCESS: 6 rules found"), "{checked}");
    let tested = run(Command::new("promtool")
        .args(["test", "rules", "ckptd-rules.test.yml"])
        .current_dir(&dir));
    assert!(tested.contains("SUCCESS"), "{tested}");
    // Every alert has a unit test, and every alert says what to do.
    let rules = std::fs::read_to_string(dir.join("ckptd-rules.yml")).unwrap();
    let tests = std::fs::read_to_string(dir.join("ckptd-rules.test.yml")).unwrap();
    for line in rules
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert: "))
    {
        let name = line.trim_start().trim_start_matches("- alert: ");
        assert!(
            tests.contains(&format!("alertname: {name}")),
            "{name} has no unit test"
        );
    }
    assert_eq!(
        rules.matches("runbook: ").count(),
        rules.matches("- alert: ").count()
    );
}

/// Every panel's queries, as Prometheus gets them (Grafana's `$__rate_interval` given a value).
fn panel_queries(dash: &Value) -> Vec<(String, String)> {
    dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] != "row")
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap().to_owned();
            p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |t| {
                    (
                        title.clone(),
                        t["expr"]
                            .as_str()
                            .unwrap()
                            .replace("$__rate_interval", "1m"),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn the_grafana_dashboard_has_what_its_import_needs() {
    let dash: Value =
        serde_json::from_slice(&std::fs::read(dashboards().join("grafana/ckptd.json")).unwrap())
            .expect("the dashboard is JSON");
    assert!(dash["schemaVersion"].as_u64().unwrap() >= 30);
    assert_eq!(dash["uid"], "ckptd");
    let vars = dash["templating"]["list"].as_array().unwrap();
    let ds = vars
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("a data source variable");
    assert_eq!(ds["query"], "prometheus");
    let var = format!("${{{}}}", ds["name"].as_str().unwrap());
    let panels = dash["panels"].as_array().unwrap();
    let mut ids: Vec<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");
    let rows: Vec<&str> = panels
        .iter()
        .filter(|p| p["type"] == "row")
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    assert_eq!(
        rows,
        [
            "Jobs",
            "Failures by reason",
            "Frozen time and size by runtime",
            "Storage",
            "Schedules",
            "Daemon"
        ]
    );
    for p in panels.iter().filter(|p| p["type"] != "row") {
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{} has no query", p["title"]);
        for t in targets {
            assert!(
                !t["expr"].as_str().unwrap_or("").is_empty(),
                "{}",
                p["title"]
            );
            assert_eq!(t["datasource"]["uid"], var.as_str(), "{}", p["title"]);
        }
        assert!(p["gridPos"]["w"].as_u64().unwrap() <= 24);
    }
}

/// A Prometheus of the test's own, scraping `target` every second with the token file and
/// evaluating the rules every second; stopped on drop.
struct Prometheus {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str, token: &Path) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {rules}\n\
                 scrape_configs:\n  - job_name: ckptd\n    authorization:\n      type: Bearer\n      credentials_file: {token}\n    static_configs:\n      - targets: ['{target}']\n",
                rules = dashboards().join("prometheus/ckptd-rules.yml").display(),
                token = token.display(),
            ),
        )
        .unwrap();
        let log_path = dir.path().join("prometheus.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus (make setup installs it)");
        wait_until_serving("prometheus", &mut child, port, &log_path);
        let p = Prometheus {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !p.get("/-/ready").contains("Ready") {
            assert!(Instant::now() < deadline, "prometheus did not become ready");
            std::thread::sleep(Duration::from_millis(200));
        }
        p
    }

    fn get(&self, path: &str) -> String {
        let out = Command::new("curl")
            .args(["-s", "-G"])
            .arg(format!("http://{}{path}", self.addr))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn query(&self, expr: &str) -> Value {
        let out = Command::new("curl")
            .args(["-s", "-G", "--data-urlencode"])
            .arg(format!("query={expr}"))
            .arg(format!("http://{}/api/v1/query", self.addr))
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn a_real_prometheus_fills_every_panel_and_raises_the_failing_schedule_alert() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    // Prometheus scrapes with the metrics-only token: it can read /metrics and nothing else.
    let admin = dir.path().join("token");
    std::fs::write(&admin, "the-admin-token-0123456789\n").unwrap();
    std::fs::set_permissions(&admin, std::fs::Permissions::from_mode(0o600)).unwrap();
    let token = dir.path().join("metrics-token");
    std::fs::write(&token, "prometheus-scrapes-0123456789\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cfg = dir.path().join("ckptd.toml");
    // A failing schedule stays enabled (its alert is about failures in a row).
    std::fs::write(&cfg, "schedule_max_failures = 0\n").unwrap();
    let d = Daemon::start_with(&[
        "--config",
        cfg.to_str().unwrap(),
        "--tcp-listen",
        "127.0.0.1:0",
        "--tcp-token-file",
        admin.to_str().unwrap(),
        "--metrics-token-file",
        token.to_str().unwrap(),
    ])
    .await;
    let prom = Prometheus::start(&d.tcp_addr(), &token);

    // A checkpoint and a restore (in place: the looper stops, then runs on).
    let mut looper = Target::python(d.dir.path(), "dash-loop", 8, false);
    d.client
        .create_checkpoint(
            &ckptd_tests::checkpoint(Some(ApiTarget::Process { pid: looper.pid }), "dash1"),
            true,
        )
        .await
        .expect("checkpoint");
    looper.reap();
    d.client
        .restore("dash1", &RestoreRequest::default(), true)
        .await
        .expect("restore");
    // A CRIU failure: an established TCP connection without tcp_established.
    let _tcp = d.failing_tcp_checkpoint("dash-tcp").await;
    // A schedule that succeeds, then fails once its target is killed.
    let mut victim = Target::python(d.dir.path(), "dash-victim", 1, false);
    d.client
        .create_schedule(&CreateSchedule {
            name: "dash-every1".into(),
            target: ApiTarget::Process { pid: victim.pid },
            cron: "* * * * * *".into(),
            options: ScheduleOptions::default(),
            retention: Retention {
                keep_last: Some(3),
                ..Default::default()
            },
            enabled: true,
        })
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while d
        .client
        .schedule("dash-every1")
        .await
        .unwrap()
        .last_success_at
        .is_none()
    {
        assert!(Instant::now() < deadline, "no scheduled run succeeded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ckptd_tests::signal(victim.pid, libc::SIGKILL);
    victim.reap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while d
        .client
        .schedule("dash-every1")
        .await
        .unwrap()
        .consecutive_failures
        < 2
    {
        assert!(Instant::now() < deadline, "the schedule did not fail twice");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Prometheus scraped it all: every query of every panel returns data.
    wait_for("a scrape of ckptd", 20, || {
        prom.query("up{job=\"ckptd\"}")["data"]["result"][0]["value"][1] == "1"
    })
    .await;
    let dash: Value =
        serde_json::from_slice(&std::fs::read(dashboards().join("grafana/ckptd.json")).unwrap())
            .unwrap();
    for (title, expr) in panel_queries(&dash) {
        let mut last = Value::Null;
        let ok = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                last = prom.query(&expr);
                let has = last["status"] == "success"
                    && last["data"]["result"]
                        .as_array()
                        .is_some_and(|r| !r.is_empty());
                if has {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
        .await;
        assert!(
            ok.is_ok(),
            "panel {title:?}: {expr} returned no data: {last}"
        );
    }
    // The failing-schedule alert: pending (it fires after 10 minutes of failures).
    wait_for("CkptdScheduleFailing pending", 20, || {
        let alerts = prom.query("ALERTS{alertname=\"CkptdScheduleFailing\"}");
        alerts["data"]["result"].as_array().is_some_and(|r| {
            r.iter().any(|a| {
                a["metric"]["schedule"] == "dash-every1"
                    && ["pending", "firing"]
                        .contains(&a["metric"]["alertstate"].as_str().unwrap_or(""))
            })
        })
    })
    .await;
    d.client.delete_schedule("dash-every1").await.unwrap();
}
