//! Hooks: shell snippets run with `sh -c` in the app's `cwd` and
//! environment, bounded by a timeout, their output kept.
//!
//! A hook runs in its own process group, like an instance, with a pid file
//! in `state_dir/run/` and the ownership marker in its environment
//! ([`crate::supervisor::pidfile`]), so a cutover killed with SIGKILL while
//! it runs leaves nothing the next start cannot find and stop. Whatever is
//! left of its group when it ends (it exited, timed out, or the deployment
//! running it was dropped) is killed: nothing a hook starts outlives it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

use crate::supervisor::pidfile::{self, PidFile, HOOK_VAR};
use crate::supervisor::process::{child_env, log_line, signal_group};

/// Output kept per hook run (the tail, when longer).
const OUTPUT_LIMIT: usize = 8 * 1024;

/// Numbers hook runs, for unique pid file names within one cutover.
static RUNS: AtomicU64 = AtomicU64::new(0);

/// One hook invocation.
#[derive(Debug, Clone)]
pub struct Hook<'a> {
    /// `build`, `deploy`, `post_start`, `post_deploy`.
    pub name: &'static str,
    pub script: &'a str,
    pub cwd: &'a Path,
    pub env: &'a BTreeMap<String, String>,
    pub timeout: Duration,
    /// The output is appended here too. When it lies in `state_dir/logs/`
    /// (every log the supervisor names does), the hook's pid file goes to
    /// the sibling `state_dir/run/`.
    pub log: &'a PathBuf,
}

/// Why a hook failed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{name} hook could not start: {source}")]
    Spawn { name: &'static str, source: std::io::Error },
    #[error("{name} hook exited with {status}; output: {output}")]
    Failed {
        name: &'static str,
        status: std::process::ExitStatus,
        output: String,
    },
    #[error("{name} hook did not finish within {timeout:?}; output: {output}")]
    Timeout {
        name: &'static str,
        timeout: Duration,
        output: String,
    },
}

impl Hook<'_> {
    /// Runs the hook; `Ok` with its (tail of) output when it exits 0.
    pub async fn run(&self) -> Result<String, HookError> {
        log_line(self.log, &format!("running {} hook: {}", self.name, self.script));
        let run = format!(
            "hook-{}-{}-{}",
            self.name,
            std::process::id(),
            RUNS.fetch_add(1, Ordering::SeqCst)
        );
        let state_dir = state_dir_of(self.log);
        let mut env = self.env.clone();
        if let Some(state_dir) = state_dir {
            env.extend(pidfile::marker(state_dir, HOOK_VAR, &run));
        }
        let mut command = Command::new("sh");
        child_env(&mut command, &env);
        let mut child = command
            .arg("-c")
            .arg(self.script)
            .current_dir(self.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|source| HookError::Spawn {
                name: self.name,
                source,
            })?;
        let pgid = child.id().unwrap_or(0);
        // Dropped however this ends (a dropped future too): kills what is
        // left of the group, then removes the pid file.
        let _group = Group {
            pgid,
            _pid_file: state_dir.map(|dir| PidFile::write(&dir.join("run").join(format!("{run}.pid")), pgid)),
        };
        let mut stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        let collect = async {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let read_out = async {
                if let Some(s) = stdout.as_mut() {
                    let _ = s.read_to_end(&mut out).await;
                }
            };
            let read_err = async {
                if let Some(s) = stderr.as_mut() {
                    let _ = s.read_to_end(&mut err).await;
                }
            };
            tokio::join!(read_out, read_err);
            let status = child.wait().await;
            out.extend_from_slice(&err);
            (status, out)
        };
        let outcome = tokio::time::timeout(self.timeout, collect).await;
        match outcome {
            Ok((status, output)) => {
                let output = tail(&output);
                self.log_output(&output);
                match status {
                    Ok(status) if status.success() => Ok(output),
                    Ok(status) => Err(HookError::Failed {
                        name: self.name,
                        status,
                        output,
                    }),
                    Err(source) => Err(HookError::Spawn {
                        name: self.name,
                        source,
                    }),
                }
            }
            Err(_) => {
                signal_group(pgid, Signal::SIGKILL);
                log_line(
                    self.log,
                    &format!("{} hook timed out after {:?}", self.name, self.timeout),
                );
                Err(HookError::Timeout {
                    name: self.name,
                    timeout: self.timeout,
                    output: String::new(),
                })
            }
        }
    }

    fn log_output(&self, output: &str) {
        for line in output.lines() {
            log_line(self.log, &format!("{}: {line}", self.name));
        }
    }
}

/// A running hook's process group; SIGKILLed when dropped.
struct Group {
    pgid: u32,
    _pid_file: Option<PidFile>,
}

impl Drop for Group {
    fn drop(&mut self) {
        signal_group(self.pgid, Signal::SIGKILL);
    }
}

/// `state_dir` when `log` is `state_dir/logs/<file>`.
fn state_dir_of(log: &Path) -> Option<&Path> {
    let logs = log.parent()?;
    if logs.file_name()? == "logs" {
        logs.parent()
    } else {
        None
    }
}

fn tail(bytes: &[u8]) -> String {
    let start = bytes.len().saturating_sub(OUTPUT_LIMIT);
    String::from_utf8_lossy(&bytes[start..]).trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook<'a>(script: &'a str, env: &'a BTreeMap<String, String>, log: &'a PathBuf) -> Hook<'a> {
        Hook {
            name: "build",
            script,
            cwd: Path::new("/tmp"),
            env,
            timeout: Duration::from_secs(5),
            log,
        }
    }

    #[tokio::test]
    async fn success_returns_output_and_sees_env() {
        let env = BTreeMap::from([("GREETING".to_string(), "hi".to_string())]);
        let log = std::env::temp_dir().join(format!("cutover-hook-{}.log", std::process::id()));
        let out = hook("echo $GREETING; echo oops >&2", &env, &log).run().await.unwrap();
        assert_eq!(out, "hi\noops");
        let _ = std::fs::remove_file(log);
    }

    /// A state_dir laid out like the supervisor's, with the hook log in
    /// `logs/`.
    fn state_dir(tag: &str) -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("cutover-hookdir-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        let dir = dir.canonicalize().unwrap();
        let log = dir.join("logs/web-hooks.log");
        (dir, log)
    }

    fn pid_files(dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir.join("run"))
            .map(|d| d.filter_map(|e| Some(e.ok()?.path())).collect())
            .unwrap_or_default()
    }

    fn alive(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(')').map(|(_, r)| !r.trim_start().starts_with(['Z', 'X'])))
            .unwrap_or(false)
    }

    #[tokio::test]
    async fn a_running_hook_has_a_pid_file_and_marker_and_its_group_dies_with_it() {
        let (dir, log) = state_dir("pid");
        let env = BTreeMap::new();
        // The hook leaves a grandchild whose pid it prints to a file.
        let script = format!("sleep 300 & echo $! > {}/grandchild; wait", dir.display());
        let task = tokio::spawn({
            let (script, log, env) = (script.clone(), log.clone(), env.clone());
            async move { hook(&script, &env, &log).run().await }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while (pid_files(&dir).is_empty() || !dir.join("grandchild").exists()) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let files = pid_files(&dir);
        assert_eq!(files.len(), 1, "one pid file in state_dir/run: {files:?}");
        let name = files[0].file_stem().unwrap().to_str().unwrap().to_string();
        assert!(name.starts_with("hook-build-"), "{name}");
        let pid = pidfile::read_pid(&files[0]).unwrap();
        let environ = pidfile::environ(pid);
        assert_eq!(pidfile::lookup(&environ, HOOK_VAR), Some(name.as_bytes()));
        assert_eq!(
            pidfile::lookup(&environ, pidfile::STATE_DIR_VAR),
            Some(dir.to_str().unwrap().as_bytes())
        );
        let grandchild: u32 = std::fs::read_to_string(dir.join("grandchild"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(alive(grandchild));
        // The deployment running it goes away (kill_on_drop alone would
        // kill only `sh`, leaving `sleep` behind).
        task.abort();
        let _ = task.await;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while alive(grandchild) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!alive(grandchild), "the hook's whole group is killed");
        assert!(pid_files(&dir).is_empty(), "the pid file goes with it");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn cutover_secrets_are_not_inherited() {
        let (dir, log) = state_dir("env");
        crate::supervisor::process::withhold_env("CUTOVER_TEST_HOOK_SECRET");
        // Safe in edition 2021; std serialises environment access.
        std::env::set_var("CUTOVER_TEST_HOOK_SECRET", "s3cret");
        std::env::set_var("CUTOVER_ADMIN_TOKEN", "t0ken");
        let env = BTreeMap::from([("APP_ONLY".to_string(), "yes".to_string())]);
        let out = hook("env", &env, &log).run().await.unwrap();
        assert!(out.contains("APP_ONLY=yes"), "{out}");
        assert!(!out.contains("s3cret") && !out.contains("t0ken"), "{out}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn failure_and_timeout_are_errors() {
        let env = BTreeMap::new();
        let log = std::env::temp_dir().join(format!("cutover-hook2-{}.log", std::process::id()));
        let err = hook("echo bad; exit 3", &env, &log).run().await.unwrap_err();
        assert!(
            matches!(err, HookError::Failed { ref output, .. } if output == "bad"),
            "{err}"
        );
        let mut slow = hook("sleep 10", &env, &log);
        slow.timeout = Duration::from_millis(100);
        assert!(matches!(slow.run().await.unwrap_err(), HookError::Timeout { .. }));
        let _ = std::fs::remove_file(log);
    }
}
