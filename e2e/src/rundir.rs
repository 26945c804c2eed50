//! The per-process run directory holding certificates, data directories and logs.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context as _, Result};

static RUN_DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// The directory of this test process: `${METRICSHARD_E2E_DIR:-$TMPDIR/metricshard-e2e}/run-<pid>`.
///
/// It is not removed when the process ends (static values are never dropped, and the logs are
/// worth keeping for a look after a failure); instead the first call removes the directories
/// of earlier runs whose process is gone.
pub fn run_dir() -> Result<&'static Path> {
    RUN_DIR
        .get_or_init(|| create().map_err(|e| format!("{e:#}")))
        .as_deref()
        .map_err(|e| anyhow::anyhow!("creating the e2e run directory: {e}"))
}

fn create() -> Result<PathBuf> {
    let base = std::env::var_os("METRICSHARD_E2E_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("metricshard-e2e"));
    std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    remove_stale_runs(&base);
    let dir = base.join(format!("run-{}", std::process::id()));
    if dir.exists() {
        // A previous process with our pid left it; nothing of it runs any more.
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir.join("logs"))
        .with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Removes `run-<pid>` directories whose process no longer exists. Best effort.
fn remove_stale_runs(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("run-")) else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
