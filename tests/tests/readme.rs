//! The README is the tutorial, and it runs: every ```sh block of README.md, in order, in one bash
//! session with `set -euo pipefail`, against a daemon of its own. The paths the README uses
//! (`/run/ckptd.sock`, `/srv/`, `/tmp/`) are moved into the test's scratch directory; `ckpt` is
//! the binary this workspace builds. A block that cannot run in a test (it installs the daemon on
//! the machine, needs a second host or dockerd) is preceded by the line
//! `<!-- readme-test: skip: WHY -->`, and the reason must say where else it is tested.

use std::path::Path;
use std::process::{Command, Stdio};

use ckptd_tests::{tail, workspace_binary, Daemon};

const SKIP: &str = "<!-- readme-test: skip:";

/// A fenced ```sh block of the README: its first line number and its text.
struct Block {
    line: usize,
    text: String,
    skip: Option<String>,
}

fn blocks(readme: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut current: Option<Block> = None;
    let mut in_other_fence = false;
    let mut last_text_line = "";
    for (i, line) in readme.lines().enumerate() {
        let fence = line.trim_start().starts_with("```");
        if current.is_some() {
            if fence {
                out.extend(current.take());
            } else if let Some(b) = current.as_mut() {
                b.text.push_str(line);
                b.text.push('\n');
            }
        } else if in_other_fence {
            in_other_fence = !fence;
        } else if line.trim() == "```sh" {
            let skip = last_text_line
                .trim()
                .strip_prefix(SKIP)
                .map(|r| r.trim_end_matches("-->").trim().to_owned());
            current = Some(Block {
                line: i + 1,
                text: String::new(),
                skip,
            });
        } else if fence {
            in_other_fence = true;
        } else if !line.trim().is_empty() {
            last_text_line = line;
        }
    }
    out
}

#[test]
fn the_readme_parser_finds_blocks_and_skips() {
    let text = "# t\n```sh\necho a\n```\n<!-- readme-test: skip: needs dockerd; tests/tests/docker.rs -->\n\n```sh\necho b\n```\n```toml\nx = 1\n```\n";
    let b = blocks(text);
    assert_eq!(b.len(), 2);
    assert_eq!(
        (b[0].line, b[0].text.as_str(), b[0].skip.as_deref()),
        (2, "echo a\n", None)
    );
    assert_eq!(
        b[1].skip.as_deref(),
        Some("needs dockerd; tests/tests/docker.rs")
    );
}

#[tokio::test]
async fn every_example_of_the_readme_runs_in_order() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let all = blocks(&readme);
    assert!(all.len() >= 8, "found only {} sh blocks", all.len());
    for b in all.iter().filter(|b| b.skip.is_some()) {
        let why = b.skip.as_deref().unwrap();
        assert!(
            why.len() > 10 && why.contains("tests/"),
            "README line {}: a skipped block must say why and where it is tested: {why:?}",
            b.line
        );
    }

    let d = Daemon::start().await;
    let scratch = d.dir.path().join("readme");
    for sub in ["srv", "tmp", "work"] {
        std::fs::create_dir_all(scratch.join(sub)).unwrap();
    }
    let mut script = String::from("set -euo pipefail\n");
    for b in all.iter().filter(|b| b.skip.is_none()) {
        // /tmp/ first: the scratch directory and the socket are themselves under /tmp/.
        let text = b
            .text
            .replace("/tmp/", &format!("{}/tmp/", scratch.display()))
            .replace("/srv/", &format!("{}/srv/", scratch.display()))
            .replace("/run/ckptd.sock", &d.socket.display().to_string());
        script.push_str(&format!(
            "echo '=== README.md line {}' >&2\n{text}\n",
            b.line
        ));
    }
    let script_path = scratch.join("readme.sh");
    std::fs::write(&script_path, &script).unwrap();

    // Every process the README starts carries this mark (restored ones too: CRIU restores the
    // environment), so that the test can end them all.
    let mark = format!("{}", std::process::id());
    let ckpt_dir = workspace_binary("ckpt");
    let path = format!(
        "{}:{}",
        ckpt_dir.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg(&script_path)
        .current_dir(scratch.join("work"))
        .env("PATH", path)
        .env("CKPTD_README_RUN", &mark)
        .stdin(Stdio::null())
        .output()
        .expect("bash");
    cleanup(&mark, &scratch);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "a README example failed ({}); the last block started is named last:\n--- stderr\n{stderr}\n--- stdout (tail)\n{}\n--- daemon log (tail)\n{}",
        out.status,
        tail(&stdout, 40),
        tail(&d.log(), 30)
    );
    // Each block ran.
    for b in all.iter().filter(|b| b.skip.is_none()) {
        assert!(
            stderr.contains(&format!("=== README.md line {}", b.line)),
            "block at line {} did not run",
            b.line
        );
    }
}

/// Ends what the README started: its processes (by their mark) and its runc containers.
fn cleanup(mark: &str, scratch: &Path) {
    let needle = format!("CKPTD_README_RUN={mark}");
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        let marked = std::fs::read(e.path().join("environ"))
            .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == needle.as_bytes()));
        if marked && pid != std::process::id() as i32 {
            ckptd_tests::signal(pid, libc::SIGKILL);
        }
    }
    for id in ["looper", "looper-clone"] {
        let _ = Command::new("runc")
            .args(["delete", "--force", id])
            .stderr(Stdio::null())
            .status();
    }
    let _ = scratch;
}
