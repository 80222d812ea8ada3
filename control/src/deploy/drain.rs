//! Draining: take instances out of service without cutting a request.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;

use super::record::DeploymentLog;
use crate::supervisor::instance::Instance;

/// For each instance, concurrently: mark its backend draining (no new
/// request can claim it), wait until its in-flight requests finish or
/// `drain_timeout` passes, then stop the process. Call only after a table
/// without these instances was published. Requests still running at the
/// deadline are cut when the process stops; they are counted in the log
/// (and each one is logged by the proxy with its path).
pub async fn drain_and_stop(instances: &[Arc<Instance>], drain_timeout: Duration, log: Option<&DeploymentLog>) -> u64 {
    // A drain_timeout too large for the clock means "no deadline" in
    // practice: far in the future instead of an overflowing add.
    let deadline = cutover_proxy::time::after(drain_timeout);
    let cut = join_all(instances.iter().map(|instance| async move {
        let name = instance.name();
        let mut left = 0;
        if let Some(backend) = instance.state().backend().cloned() {
            let long_lived = backend.long_lived();
            backend.start_draining();
            let waiting = backend.inflight().saturating_sub(long_lived);
            if let Some(log) = log {
                if waiting > 0 {
                    log.info(Some(name), format!("draining {waiting} in-flight requests"));
                }
                if long_lived > 0 {
                    log.info(
                        Some(name),
                        format!(
                            "notifying {long_lived} long-lived connections (WebSocket 1012, SSE retry, gRPC status 14)"
                        ),
                    );
                }
            }
            left = backend.wait_idle(deadline).await;
            if left > 0 {
                tracing::warn!(
                    instance = name,
                    requests = left,
                    ?drain_timeout,
                    "drain deadline reached; cutting requests"
                );
                if let Some(log) = log {
                    log.warn(
                        Some(name),
                        format!("{left} requests still running at drain_timeout ({drain_timeout:?}) are cut"),
                    );
                }
            }
        }
        instance.stop().await;
        if let Some(log) = log {
            log.info(Some(name), "stopped");
        }
        left
    }))
    .await;
    cut.into_iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_drain_timeout_beyond_the_clock_does_not_panic() {
        assert_eq!(drain_and_stop(&[], Duration::MAX, None).await, 0);
    }
}
