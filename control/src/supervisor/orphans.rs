//! Instances a previous cutover left running (it was killed with SIGKILL,
//! or the machine's cutover crashed): found through their pid files and
//! stopped before anything starts, so no orphan outlives a restart.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::process::signal_group;

/// Stops every process group named by a pid file in `run_dir` that still
/// belongs to the instance the file is named after, and removes the files.
/// Returns the instances that were stopped.
pub fn reap(run_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(run_dir) else {
        return Vec::new();
    };
    let mut reaped = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let Some(instance) = path.file_stem().and_then(|s| s.to_str()).map(str::to_string) else {
            continue;
        };
        let pid = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        if let Some(pid) = pid.filter(|pid| belongs_to(*pid, &instance)) {
            tracing::warn!(%instance, pid, "stopping an instance left behind by a previous run");
            signal_group(pid, Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            signal_group(pid, Signal::SIGKILL);
            reaped.push(instance);
        }
        let _ = std::fs::remove_file(&path);
    }
    reaped
}

/// Is `pid` still the process cutover started as `instance`? (A pid may
/// have been reused by an unrelated process since.)
fn belongs_to(pid: u32, instance: &str) -> bool {
    let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let wanted = format!("CUTOVER_INSTANCE={instance}");
    environ.split(|b| *b == 0).any(|var| var == wanted.as_bytes())
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
        })
        .is_some_and(|dead| !dead)
}
