//! The router and openapi.yaml agree, and every route answers through the real router.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::*;
use crate::catalog::Catalog;
use crate::criu::{Criu, CriuProbe};
use crate::service::{Service, ServiceConfig};

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

fn spec_routes() -> BTreeSet<(String, String)> {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi.yaml")).unwrap();
    let spec: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    let mut out = BTreeSet::new();
    for (path, item) in spec["paths"].as_mapping().unwrap() {
        for (method, _) in item.as_mapping().unwrap() {
            let m = method.as_str().unwrap();
            if METHODS.contains(&m) {
                out.insert((m.to_uppercase(), path.as_str().unwrap().to_owned()));
            }
        }
    }
    out
}

#[test]
fn router_and_openapi_list_the_same_routes() {
    let served: BTreeSet<(String, String)> = route_table()
        .into_iter()
        .map(|(m, p)| (m.to_string(), p.to_owned()))
        .collect();
    let spec = spec_routes();
    let undocumented: Vec<_> = served.difference(&spec).collect();
    let unserved: Vec<_> = spec.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from openapi.yaml: {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "openapi.yaml lists routes the daemon does not serve: {unserved:?}"
    );
}

async fn app() -> (tempfile::TempDir, Router) {
    let d = tempfile::tempdir().unwrap();
    let catalog = Catalog::open(&d.path().join("c.db")).await.unwrap();
    let schedules_catalog = catalog.clone();
    let probe = CriuProbe::default();
    let criu = Arc::new(Criu::new(probe.clone(), 4, None));
    let engine = Arc::new(crate::runtime::Engines::new(
        criu,
        std::time::Duration::from_secs(1),
        crate::runtime::EnginePaths {
            runc: None,
            container_logs: d.path().join("logs"),
            terminals: d.path().join("terminals"),
            docker_socket: d.path().join("docker.sock"),
            docker_runc_root: d.path().join("moby"),
            podman_socket: d.path().join("podman.sock"),
            podman: None,
            containerd_socket: d.path().join("containerd.sock"),
            containerd_namespace: "k8s.io".into(),
        },
    ));
    let service = Service::new(
        catalog,
        engine,
        ServiceConfig {
            checkpoints_root: d.path().join("checkpoints"),
            queue_capacity: 4,
            job_timeout: std::time::Duration::from_secs(60),
            policy: Default::default(),
            import_max_bytes: 1 << 30,
            remotes: Default::default(),
            schedule_max_failures: 5,
        },
    );
    let info = Arc::new(DaemonInfo {
        criu: probe,
        state_dir: d.path().to_owned(),
        checkpoints_dir: d.path().join("checkpoints"),
        workers: 1,
        queue_capacity: 4,
        unknown_dirs: vec![],
    });
    let schedules = crate::schedules::Schedules::new(
        service.clone(),
        schedules_catalog,
        std::time::Duration::from_secs(60),
        std::time::Duration::from_secs(7 * 86400),
        5,
    );
    let app = router(AppState {
        portability: crate::portability::Portability::new(service.clone()),
        service,
        lists: Default::default(),
        schedules,
        info,
    })
    .layer(axum::extract::connect_info::MockConnectInfo(
        crate::auth::Caller::ROOT,
    ));
    (d, app)
}

async fn call(
    app: &Router,
    method: Method,
    path: &str,
    body: &str,
) -> (StatusCode, serde_json::Value) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .body(Body::from(body.to_owned()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    // An event stream never ends: its status is what these tests look at.
    let streaming = resp
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if streaming {
        return (status, serde_json::Value::Null);
    }
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test]
async fn every_documented_route_is_served_and_others_are_not() {
    let (_d, app) = app().await;
    for (method, path) in spec_routes() {
        let concrete = path
            .replace("{ref}", "nope")
            .replace("{id}", "6f1c1b0e-8a44-4d3f-a5a5-0a0b0c0d0e0f");
        let (status, body) = call(&app, method.parse().unwrap(), &concrete, "").await;
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert!(
            body["error"]["message"] != "no such route",
            "{method} {path} fell through to the fallback"
        );
        // Methods the spec does not list for this path are refused with the API's error body.
        for other in METHODS.iter().map(|m| m.to_uppercase()) {
            let listed = spec_routes().contains(&(other.clone(), path.clone()));
            if !listed {
                let (status, body) = call(&app, other.parse().unwrap(), &concrete, "").await;
                assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{other} {path}");
                assert_eq!(body["error"]["code"], "invalid_request");
            }
        }
    }
}

#[tokio::test]
async fn rejections_use_the_api_error_body() {
    let (_d, app) = app().await;
    let (s, b) = call(&app, Method::POST, "/v1/checkpoints", "{not json").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(b["error"]["code"], "invalid_request");
    let (s, b) = call(
        &app,
        Method::POST,
        "/v1/checkpoints",
        r#"{"target":{"kind":"process","pid":5},"x":1}"#,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(b["error"]["message"]
        .as_str()
        .unwrap()
        .contains("unknown field `x`"));
    let (s, b) = call(&app, Method::GET, "/nope", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(b["error"]["code"], "not_found");
    let big = " ".repeat(BODY_LIMIT + 1);
    let (s, b) = call(&app, Method::POST, "/v1/checkpoints", &big).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(b["error"]["code"], "payload_too_large");
}

#[test]
fn every_error_kind_has_one_status() {
    use crate::error::ErrorKind;
    for k in ErrorKind::ALL {
        assert_eq!(ErrorKind::from_code(k.code()), Some(k));
        let s = error::status(k);
        assert!(s.is_client_error() || s.is_server_error(), "{k:?}");
    }
}

mod fuzz {
    //! Request parsing under arbitrary input, through the real router: whatever a client sends,
    //! the answer is never a 5xx and always the API's error body when it is an error.
    use proptest::prelude::*;

    use super::*;

    fn check(status: StatusCode, body: &serde_json::Value) -> Result<(), TestCaseError> {
        prop_assert!(!status.is_server_error(), "{status} {body}");
        if status.is_client_error() {
            prop_assert!(body["error"]["code"].is_string(), "{status} {body}");
            prop_assert!(body["error"]["message"].is_string(), "{status} {body}");
        }
        Ok(())
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_bodies(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let rt = rt();
            let (_d, app) = rt.block_on(app());
            for path in ["/v1/checkpoints", "/v1/checkpoints/x/restore"] {
                let req = Request::builder().method(Method::POST).uri(path).body(Body::from(body.clone())).unwrap();
                let resp = rt.block_on(app.clone().oneshot(req)).unwrap();
                let status = resp.status();
                let bytes = rt.block_on(resp.into_body().collect()).unwrap().to_bytes();
                let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
                check(status, &v)?;
            }
        }

        #[test]
        fn json_shaped_bodies(
            pid in any::<i64>(),
            name in "\\PC{0,40}",
            dir in "\\PC{0,40}",
            key in "\\PC{0,10}",
            val in "\\PC{0,10}",
        ) {
            let rt = rt();
            let (_d, app) = rt.block_on(app());
            let body = serde_json::json!({
                "target": {"kind": "process", "pid": pid},
                "name": name, "checkpoint_dir": dir, "labels": {key: val},
            });
            let (status, v) = rt.block_on(call(&app, Method::POST, "/v1/checkpoints", &body.to_string()));
            check(status, &v)?;
        }

        #[test]
        fn arbitrary_queries(q in "[a-z=&%0-9.-]{0,60}") {
            let rt = rt();
            let (_d, app) = rt.block_on(app());
            for path in ["/v1/checkpoints", "/v1/jobs", "/v1/jobs/6f1c1b0e-8a44-4d3f-a5a5-0a0b0c0d0e0f"] {
                let (status, v) = rt.block_on(call(&app, Method::GET, &format!("{path}?{q}"), ""));
                check(status, &v)?;
            }
        }
    }
}

/// Every advice the daemon can give is one openapi.yaml's `Advice` lists, with its fields.
#[test]
fn openapi_lists_every_advice() {
    use ckptd_api::{Advice, CriuOption};
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi.yaml")).unwrap();
    let spec: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    let schema = &spec["components"]["schemas"]["Advice"];
    let kinds: Vec<&str> = schema["properties"]["kind"]["enum"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    let mut all = Advice::samples();
    all.push(Advice::RetryWith {
        option: CriuOption::ShellJob,
        because: "b".into(),
        or: Some("o".into()),
        note: Some("n".into()),
    });
    let listed: std::collections::BTreeSet<String> = all
        .iter()
        .map(|a| {
            serde_json::to_value(a).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(kinds.len(), listed.len(), "{kinds:?}");
    for a in all {
        let v = serde_json::to_value(&a).unwrap();
        let kind = v["kind"].as_str().unwrap();
        assert!(kinds.contains(&kind), "{kind} is not in openapi.yaml");
        for field in v.as_object().unwrap().keys() {
            assert!(
                !schema["properties"][field.as_str()].is_null(),
                "{kind}.{field} is not in openapi.yaml"
            );
        }
    }
}

#[tokio::test]
async fn a_missed_list_is_filled_once_for_concurrent_requests() {
    let cache = std::sync::Arc::new(super::ListCache::default());
    let fills = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let asks: Vec<_> = (0..16)
        .map(|_| {
            let (cache, fills) = (cache.clone(), fills.clone());
            tokio::spawn(async move {
                cache
                    .get_or_fill(
                        "k".into(),
                        || 7,
                        || async move {
                            fills.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            Ok(bytes::Bytes::from_static(b"[]"))
                        },
                    )
                    .await
                    .unwrap()
            })
        })
        .collect();
    for a in asks {
        assert_eq!(a.await.unwrap(), "[]");
    }
    assert_eq!(fills.load(std::sync::atomic::Ordering::SeqCst), 1);
    // A write (a new version) makes the next request query again.
    cache
        .get_or_fill(
            "k".into(),
            || 8,
            || async { Ok(bytes::Bytes::from_static(b"[1]")) },
        )
        .await
        .unwrap();
    assert_eq!(cache.get("k", 8).unwrap(), "[1]");
}
