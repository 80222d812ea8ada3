//! The human tables of `cutover status`, `history` and `certs`: pure
//! functions of the API's typed answers.

use cutover_control::api::{
    wire_name, AnalysisValue, AppSwitches, CanaryStatus, CertificatesBody, Deployment, Operation, StatusBody,
};

/// The human table of `cutover status`.
pub fn render_status(status: &StatusBody) -> String {
    let mut out = String::new();
    for app in &status.apps {
        out.push_str(&format!("app {}  version {}\n", app.name, app.version));
        if app.switches != AppSwitches::default() {
            out.push_str(&format!("  {}\n", render_switches(&app.name, &app.switches)));
        }
        if let Some(canary) = &app.canary {
            out.push_str(&render_canary(&app.name, canary));
        }
        out.push_str(&format!(
            "  {:<18} {:<9} {:<13} {:<22} {:<10} {:>9} {:>10}\n",
            "INSTANCE", "ROLE", "VERSION", "ADDRESS", "STATE", "IN-FLIGHT", "LONG-LIVED"
        ));
        for i in &app.instances {
            out.push_str(&format!(
                "  {:<18} {:<9} {:<13} {:<22} {:<10} {:>9} {:>10}\n",
                i.name,
                i.role.as_str(),
                i.version,
                i.address.as_deref().unwrap_or("-"),
                i.state,
                i.inflight,
                i.long_lived,
            ));
        }
    }
    for d in &status.deployments {
        out.push_str(&format!(
            "deployment {} of {} ({}): phase {}\n",
            d.id,
            d.app,
            what(d),
            d.phase.map_or("-", |p| p.as_str()),
        ));
    }
    for (app, version) in &status.staged {
        out.push_str(&format!(
            "staged: {app} version {version} (run `cutover deploy {app}`)\n"
        ));
    }
    out.push_str(&format!("route table generation {}\n", status.route_table_generation));
    out
}

/// An app's pause and maintenance in one line (`serving` when neither).
pub fn render_switches(app: &str, switches: &AppSwitches) -> String {
    let mut parts = Vec::new();
    if let Some(paused) = &switches.paused {
        parts.push(format!(
            "paused since {}: new requests are held (each up to {}) until `cutover resume {app}`",
            paused.since,
            humantime::format_duration(std::time::Duration::from_millis(paused.max_pause_ms)),
        ));
    }
    if let Some(maintenance) = &switches.maintenance {
        let message = maintenance
            .message
            .as_deref()
            .map(|m| format!(" ({m:?})"))
            .unwrap_or_default();
        parts.push(format!(
            "in maintenance since {}{message}: requests get 503 until `cutover maintenance {app} off`",
            maintenance.since
        ));
    }
    if parts.is_empty() {
        "serving (not paused, not in maintenance)".to_string()
    } else {
        parts.join("; ")
    }
}

/// A running canary: step, weight, what it waits for, what the analysis saw.
fn render_canary(app: &str, canary: &CanaryStatus) -> String {
    let waiting = match canary.waiting.as_deref() {
        Some("manual") => format!(", manual pause: waiting for `cutover promote {app}`"),
        Some(other) => format!(", waiting: {other}"),
        None => String::new(),
    };
    let mut out = format!(
        "  canary {}: step {}/{}, weight {}%{waiting}\n",
        canary.deployment,
        canary.step,
        canary.steps,
        percent(canary.weight),
    );
    if !canary.analysis.is_empty() {
        let values: Vec<String> = canary.analysis.iter().map(render_analysis).collect();
        out.push_str(&format!("    analysis: {}\n", values.join(", ")));
    }
    out
}

/// One analysis value against its limit, in the unit its metric reads in.
fn render_analysis(value: &AnalysisValue) -> String {
    match value.metric.as_str() {
        "error_rate" => format!(
            "error_rate {}% (max {}%)",
            percent(value.value * 100.0),
            percent(value.limit * 100.0)
        ),
        "requests" => format!("requests {:.0} (min {:.0})", value.value, value.limit),
        "latency_ratio" => format!("latency_ratio {:.2} (max {:.2})", value.value, value.limit),
        other => format!("{other} {} (limit {})", value.value, value.limit),
    }
}

/// A percentage without a trailing `.0` (`5`, `2.5`).
fn percent(value: f64) -> String {
    let text = format!("{value:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// What a history entry did: the strategy of a deployment, `rollback/` and
/// its strategy for a rollback, else the operation (`pause`, …).
fn what(d: &Deployment) -> String {
    match d.operation {
        Operation::Deploy => wire_name(&d.strategy),
        Operation::Rollback => format!("{}/{}", wire_name(&d.operation), wire_name(&d.strategy)),
        other => wire_name(&other),
    }
}

/// The table of `cutover history [APP]`.
pub fn render_history(deployments: &[Deployment], app: Option<&str>) -> String {
    let mut out = format!(
        "{:<14} {:<10} {:<18} {:<12} {:<25} {:>9}  PHASES\n",
        "ID", "APP", "STRATEGY", "OUTCOME", "STARTED", "DURATION"
    );
    for d in deployments {
        if app.is_some_and(|a| d.app != a) {
            continue;
        }
        let phases: Vec<String> = d
            .phases
            .iter()
            .map(|p| {
                let ms = p
                    .duration_ms
                    .map(|ms| format!(" {:.1}s", ms as f64 / 1000.0))
                    .unwrap_or_default();
                format!("{}{ms}", p.phase.as_str())
            })
            .collect();
        out.push_str(&format!(
            "{:<14} {:<10} {:<18} {:<12} {:<25} {:>9}  {}\n",
            d.id,
            d.app,
            what(d),
            d.outcome.map_or("running", |o| o.as_str()),
            d.started_at,
            d.duration_ms
                .map(|ms| format!("{:.1}s", ms as f64 / 1000.0))
                .unwrap_or_else(|| "-".into()),
            phases.join(", "),
        ));
        if let Some(reason) = &d.reason {
            out.push_str(&format!("{:<14} reason: {reason}\n", ""));
        }
    }
    out
}

/// The human table of `cutover certs`.
pub fn render_certs(body: &CertificatesBody) -> String {
    if body.certificates.is_empty() {
        return "no certificates (proxy.tls has no certificates, or cutover started without it)\n".to_string();
    }
    let mut out = format!(
        "{:<30} {:<6} {:<21} {:<36} {}\n",
        "HOST", "SOURCE", "EXPIRES", "ISSUER", "STATE"
    );
    for cert in &body.certificates {
        let state = match &cert.acme {
            None => format!(
                "file {}",
                cert.cert.as_ref().map_or("-".into(), |p| p.display().to_string())
            ),
            Some(acme) => {
                let mut state = wire_name(&acme.state);
                if let Some(next) = &acme.next_attempt {
                    state.push_str(&format!(", next attempt {next}"));
                }
                if let Some(error) = &acme.last_error {
                    state.push_str(&format!(", last error: {error}"));
                }
                state
            }
        };
        out.push_str(&format!(
            "{:<30} {:<6} {:<21} {:<36} {}\n",
            cert.host,
            cert.source,
            cert.not_after.as_deref().unwrap_or("-"),
            cert.issuer.as_deref().unwrap_or("-"),
            state,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use cutover_control::api::{Maintenance, Outcome, Paused, Strategy};

    fn record(operation: Operation, outcome: Option<Outcome>) -> Deployment {
        let mut d = Deployment::new("web-7".into(), "web", Strategy::Rolling, "a".into(), "b".into());
        d.operation = operation;
        d.outcome = outcome;
        d
    }

    #[test]
    fn history_names_the_operation_of_entries_that_are_not_deploys() {
        let table = render_history(
            &[
                record(Operation::Deploy, Some(Outcome::Succeeded)),
                record(Operation::Rollback, Some(Outcome::RolledBack)),
                record(Operation::MaintenanceOn, None),
            ],
            None,
        );
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[1].contains(" rolling ") && lines[1].contains("succeeded"),
            "{table}"
        );
        assert!(
            lines[2].contains(" rollback/rolling ") && lines[2].contains("rolled_back"),
            "{table}"
        );
        assert!(
            lines[3].contains(" maintenance_on ") && lines[3].contains("running"),
            "{table}"
        );
        assert_eq!(
            render_history(&[record(Operation::Deploy, None)], Some("api"))
                .lines()
                .count(),
            1
        );
    }

    #[test]
    fn switches_and_canary_read_as_sentences() {
        let switches = AppSwitches {
            paused: Some(Paused {
                since: "2026-01-01T00:00:00Z".into(),
                max_pause_ms: 90_000,
            }),
            maintenance: Some(Maintenance {
                since: "2026-01-01T00:00:01Z".into(),
                message: Some("back soon".into()),
            }),
        };
        let line = render_switches("web", &switches);
        assert!(
            line.contains("paused since 2026-01-01T00:00:00Z") && line.contains("1m 30s"),
            "{line}"
        );
        assert!(
            line.contains("maintenance since") && line.contains("\"back soon\""),
            "{line}"
        );
        assert!(render_switches("web", &AppSwitches::default()).starts_with("serving"));

        let canary = CanaryStatus {
            deployment: "web-4".into(),
            step: 2,
            steps: 3,
            weight: 25.0,
            waiting: Some("manual".into()),
            analysis: vec![
                AnalysisValue {
                    metric: "error_rate".into(),
                    value: 0.004,
                    limit: 0.01,
                },
                AnalysisValue {
                    metric: "requests".into(),
                    value: 30.0,
                    limit: 50.0,
                },
            ],
        };
        let text = render_canary("web", &canary);
        assert!(
            text.contains("canary web-4: step 2/3, weight 25%, manual pause: waiting for `cutover promote web`"),
            "{text}"
        );
        assert!(
            text.contains("error_rate 0.4% (max 1%), requests 30 (min 50)"),
            "{text}"
        );
    }
}
