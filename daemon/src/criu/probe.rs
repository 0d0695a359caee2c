//! What CRIU is on this host: `criu --version`, `criu check` and the features `/v1/info` reports,
//! probed once when the daemon starts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

use super::find_in_path;

/// What `criu check` and `criu --version` said when the daemon started (the default: no CRIU
/// found).
#[derive(Debug, Clone, Default)]
pub struct CriuProbe {
    pub path: Option<PathBuf>,
    pub version: Option<String>,
    pub check_ok: bool,
    pub check_output: Option<String>,
    pub features: std::collections::BTreeMap<String, bool>,
    /// Whether CRIU can keep what it probes of the kernel between runs ([`kernel_probe_cacheable`]).
    pub kernel_probe_cached: bool,
}

/// The CRIU features `/v1/info` reports.
pub const FEATURES: [&str; 6] = [
    "uffd",
    "uffd-noncoop",
    "mem_dirty_track",
    "pidfd_store",
    "network_lock_nftables",
    "tcp_half_closed",
];

impl CriuProbe {
    pub async fn run(configured: Option<&Path>) -> CriuProbe {
        let path = configured
            .map(Path::to_owned)
            .or_else(|| find_in_path("criu"));
        let Some(path) = path else {
            return CriuProbe {
                path: None,
                version: None,
                check_ok: false,
                check_output: Some("criu not found in PATH; run `make setup`".into()),
                features: Default::default(),
                kernel_probe_cached: kernel_probe_cacheable(),
            };
        };
        let version = Command::new(&path)
            .arg("--version")
            .output()
            .await
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .find_map(|l| l.strip_prefix("Version:").map(|v| v.trim().to_owned()))
            });
        let check = tokio::time::timeout(
            Duration::from_secs(60),
            Command::new(&path).arg("check").output(),
        )
        .await;
        let (check_ok, check_output) = match check {
            Ok(Ok(o)) => {
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                );
                (o.status.success(), (!o.status.success()).then_some(text))
            }
            Ok(Err(e)) => (false, Some(format!("cannot run {}: {e}", path.display()))),
            Err(_) => (
                false,
                Some("`criu check` did not finish within 60 s".into()),
            ),
        };
        // `criu check` above also warmed CRIU's kdat cache, so these are quick.
        let probes = FEATURES.iter().map(|f| {
            let path = path.clone();
            async move {
                let out = Command::new(&path)
                    .args(["check", "--feature", f])
                    .output()
                    .await;
                let ok = out.is_ok_and(|o| {
                    o.status.success()
                        && String::from_utf8_lossy(&o.stdout).contains("is supported")
                });
                ((*f).to_owned(), ok)
            }
        });
        let features = futures_util::future::join_all(probes)
            .await
            .into_iter()
            .collect();
        CriuProbe {
            path: Some(path),
            version,
            check_ok,
            check_output,
            features,
            kernel_probe_cached: kernel_probe_cacheable(),
        }
    }
}

/// Whether CRIU (run as root) can keep what it probes of the kernel between runs: it writes
/// `/run/criu.kdat` only when /run is a tmpfs, as on any host systemd booted. When it cannot,
/// every CRIU run probes again first (`iptables -L`, `ip6tables -L` and a dozen features:
/// 40-70 ms a run on the VM of BENCHMARKS.md, twice for a lazy restore).
pub fn kernel_probe_cacheable() -> bool {
    nix::sys::statfs::statfs("/run")
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
}
