//! One function per client subcommand. Each returns the process's exit
//! code; an error (unreachable API, refusal) is printed by `main` and
//! exits 1.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use cutover_control::api::{
    wire_name, AppSwitches, CertificatesBody, DeployAnswer, DeployRequest, Deployment, MaintenanceRequest,
    PauseRequest, PromoteRequest, PushReport, RollbackRequest, StatusBody, Strategy, UpgradeAnswer, UpgradeOutcome,
    UpgradeRequest,
};
use hyper::body::Bytes;

use super::render::{render_certs, render_history, render_status, render_switches};
use super::{path_segment, AdminArgs, AdminClient};

/// `cutover status [--json] [--watch]`.
pub async fn status(args: AdminArgs, json: bool, watch: bool) -> anyhow::Result<ExitCode> {
    let client = AdminClient::new(&args)?;
    loop {
        let status: StatusBody = client.get("/status").await?;
        if json {
            println!("{}", serde_json::to_string_pretty(&status)?);
        } else {
            if watch {
                print!("\x1b[2J\x1b[H"); // clear the screen, cursor home
            }
            print!("{}", render_status(&status));
        }
        if !watch {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        }
    }
}

/// `cutover deploy [APP] [--strategy S] [--no-wait]`.
pub async fn deploy(
    args: AdminArgs,
    app: Option<String>,
    strategy: Option<Strategy>,
    no_wait: bool,
) -> anyhow::Result<ExitCode> {
    let client = AdminClient::new(&args)?;
    let request = DeployRequest { app, strategy };
    let answer: DeployAnswer = match client.post("/deploy", &request).await? {
        Ok((_, answer)) => answer,
        Err(refused) => bail!("{}", refused.message()),
    };
    follow_all(&client, &answer, no_wait).await
}

/// `cutover rollback [APP] [--no-wait]`: followed like a deploy, same exit
/// codes.
pub async fn rollback(args: AdminArgs, app: Option<String>, no_wait: bool) -> anyhow::Result<ExitCode> {
    let client = AdminClient::new(&args)?;
    let answer: DeployAnswer = match client.post("/rollback", &RollbackRequest { app }).await? {
        Ok((_, answer)) => answer,
        Err(refused) => bail!("{}", refused.message()),
    };
    follow_all(&client, &answer, no_wait).await
}

/// `cutover push [FILE] [--deploy-strategy S] [--no-wait]`.
pub async fn push(
    args: AdminArgs,
    file: PathBuf,
    strategy: Option<Strategy>,
    no_wait: bool,
) -> anyhow::Result<ExitCode> {
    let source = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let client = AdminClient::new(&args)?;
    let path = match strategy {
        Some(s) => format!("/push?deploy_strategy={}", wire_name(&s)),
        None => "/push".to_string(),
    };
    let report: PushReport = match client.post_yaml(&path, Bytes::from(source)).await? {
        Ok((_, report)) => report,
        Err(refused) => {
            eprintln!("{}: push refused ({}):", file.display(), refused.status);
            for line in refused.body.error.lines() {
                eprintln!("  {line}");
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    for (apps, label) in [
        (&report.added, "started"),
        (&report.removed, "removed"),
        (&report.staged, "staged (run `cutover deploy` to apply)"),
    ] {
        for app in apps {
            println!("{app}: {label}");
        }
    }
    if report.routes_changed {
        println!("routes and proxy settings: applied");
    }
    for warning in &report.warnings {
        println!("warning: {warning}");
    }
    if report.deployments.is_empty() {
        if report.staged.is_empty() && report.added.is_empty() && report.removed.is_empty() {
            println!("no app changed");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let ids: Vec<String> = report.deployments.iter().map(|d| d.id.clone()).collect();
    follow_ids(&client, &ids, no_wait).await
}

/// `cutover history [APP]`.
pub async fn history(args: AdminArgs, app: Option<String>) -> anyhow::Result<ExitCode> {
    let client = AdminClient::new(&args)?;
    let deployments: Vec<Deployment> = client.get("/deployments").await?;
    print!("{}", render_history(&deployments, app.as_deref()));
    Ok(ExitCode::SUCCESS)
}

/// `cutover promote APP [--full]`: moves the app's running canary past its
/// manual pause (or through every remaining step).
pub async fn promote(args: AdminArgs, app: String, full: bool) -> anyhow::Result<ExitCode> {
    let client = AdminClient::new(&args)?;
    let id = running_deployment(&client, &app, "promote").await?;
    let path = format!("/deployments/{}/promote", path_segment(&id));
    let _: Deployment = match client.post(&path, &PromoteRequest { full }).await? {
        Ok((_, deployment)) => deployment,
        Err(refused) => bail!("{}", refused.message()),
    };
    if full {
        println!("{id}: promoted through every remaining step");
    } else {
        println!("{id}: promoted past the pause");
    }
    Ok(ExitCode::SUCCESS)
}

/// `cutover abort APP`: stops the app's running deployment, then follows
/// it to its end; exit 0 once it ended `aborted`.
pub async fn abort(args: AdminArgs, app: String) -> anyhow::Result<ExitCode> {
    let client = AdminClient::new(&args)?;
    let id = running_deployment(&client, &app, "abort").await?;
    let path = format!("/deployments/{}/abort", path_segment(&id));
    let _: Deployment = match client.post(&path, &serde_json::json!({})).await? {
        Ok((_, deployment)) => deployment,
        Err(refused) => bail!("{}", refused.message()),
    };
    println!("{id}: aborting");
    let outcome = crate::follow::follow(&client, &id).await?;
    Ok(crate::follow::abort_exit_code(outcome))
}

/// `cutover pause APP [--max-pause 60s]`.
pub async fn pause(args: AdminArgs, app: String, max_pause: Option<String>) -> anyhow::Result<ExitCode> {
    let request = PauseRequest { max_pause };
    switch(args, &app, "pause", &request).await
}

/// `cutover resume APP`.
pub async fn resume(args: AdminArgs, app: String) -> anyhow::Result<ExitCode> {
    switch(args, &app, "resume", &serde_json::json!({})).await
}

/// `cutover maintenance APP on|off [--message TEXT]`.
pub async fn maintenance(args: AdminArgs, app: String, on: bool, message: Option<String>) -> anyhow::Result<ExitCode> {
    let request = MaintenanceRequest { on, message };
    switch(args, &app, "maintenance", &request).await
}

/// POSTs `request` to `/apps/{app}/{verb}` and prints the app's switches
/// as they are after it.
async fn switch(args: AdminArgs, app: &str, verb: &str, request: &impl serde::Serialize) -> anyhow::Result<ExitCode> {
    let client = AdminClient::new(&args)?;
    let path = format!("/apps/{}/{verb}", path_segment(app));
    let switches: AppSwitches = match client.post(&path, request).await? {
        Ok((_, switches)) => switches,
        Err(refused) => bail!("{}", refused.message()),
    };
    println!("{app}: {}", render_switches(app, &switches));
    Ok(ExitCode::SUCCESS)
}

/// The id of `app`'s running deployment, from `/status`; an error saying
/// there is nothing to `verb` when none runs.
async fn running_deployment(client: &AdminClient, app: &str, verb: &str) -> anyhow::Result<String> {
    let status: StatusBody = client.get("/status").await?;
    if !status.apps.iter().any(|a| a.name == app) {
        bail!("no app named {app:?}");
    }
    match status.deployments.iter().find(|d| d.app == app) {
        Some(deployment) => Ok(deployment.id.clone()),
        None => bail!("no deployment of {app} is running: nothing to {verb}"),
    }
}

/// `cutover certs [--reload] [--json]`.
pub async fn certs(args: AdminArgs, reload: bool, json: bool) -> anyhow::Result<ExitCode> {
    let client = AdminClient::new(&args)?;
    let body: CertificatesBody = if reload {
        match client.post("/certificates/reload", &serde_json::json!({})).await? {
            Ok((_, body)) => body,
            Err(refused) => {
                eprintln!(
                    "certificate reload refused ({}); the certificates in use stay:",
                    refused.status
                );
                for line in refused.body.error.lines() {
                    eprintln!("  {line}");
                }
                return Ok(ExitCode::FAILURE);
            }
        }
    } else {
        client.get("/certificates").await?
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&body)?);
    } else {
        if reload {
            println!("certificate files reloaded");
        }
        print!("{}", render_certs(&body));
    }
    Ok(ExitCode::SUCCESS)
}

async fn follow_all(client: &AdminClient, answer: &DeployAnswer, no_wait: bool) -> anyhow::Result<ExitCode> {
    let ids: Vec<String> = answer.deployments.iter().map(|d| d.id.clone()).collect();
    follow_ids(client, &ids, no_wait).await
}

async fn follow_ids(client: &AdminClient, ids: &[String], no_wait: bool) -> anyhow::Result<ExitCode> {
    if no_wait {
        for id in ids {
            println!("{id}: started");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut outcomes = Vec::new();
    for id in ids {
        outcomes.push(crate::follow::follow(client, id).await?);
    }
    Ok(crate::follow::exit_code(&outcomes))
}

/// `cutover upgrade [--binary PATH]`: asks the running cutover to replace
/// itself, prints each step, exits 0 once the new process serves, 1 with
/// the reason when the running one serves on.
pub async fn upgrade(args: AdminArgs, binary: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let client = AdminClient::new(&args)?;
    let binary = match binary {
        // The server checks the path; a relative one means the caller's.
        Some(path) => Some(std::path::absolute(&path).with_context(|| format!("bad path {}", path.display()))?),
        None => None,
    };
    let before = client.get::<StatusBody>("/status").await?.pid;
    let answer: UpgradeAnswer = match client.post("/upgrade", &UpgradeRequest { binary }).await? {
        Ok((_, answer)) => answer,
        Err(refused) => bail!("{}", refused.message()),
    };
    match crate::follow::follow_upgrade(&client, &answer.id).await {
        Ok(UpgradeOutcome::Succeeded) => Ok(ExitCode::SUCCESS),
        Ok(_) => Ok(ExitCode::FAILURE),
        Err(e) => {
            // The old process may have gone before its last event got out:
            // the answer is whoever serves now.
            match client.get::<StatusBody>("/status").await {
                Ok(now) if now.pid != before => {
                    println!("upgraded: cutover now runs as pid {}", now.pid);
                    Ok(ExitCode::SUCCESS)
                }
                _ => Err(e),
            }
        }
    }
}
