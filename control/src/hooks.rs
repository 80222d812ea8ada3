//! Hooks: shell snippets run with `sh -c` in the app's `cwd` and
//! environment, bounded by a timeout, their output kept.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

use crate::supervisor::process::{log_line, signal_group};

/// Output kept per hook run (the tail, when longer).
const OUTPUT_LIMIT: usize = 8 * 1024;

/// One hook invocation.
#[derive(Debug, Clone)]
pub struct Hook<'a> {
    /// `build`, `deploy`, `post_start`, `post_deploy`.
    pub name: &'static str,
    pub script: &'a str,
    pub cwd: &'a Path,
    pub env: &'a BTreeMap<String, String>,
    pub timeout: Duration,
    /// The output is appended here too.
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
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(self.script)
            .current_dir(self.cwd)
            .envs(self.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| HookError::Spawn {
                name: self.name,
                source,
            })?;
        let pgid = child.id().unwrap_or(0);
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
