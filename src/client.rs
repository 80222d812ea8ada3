//! Client commands: talk to a running cutover's admin API.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

/// Where the admin API is: `--admin`, `$CUTOVER_ADMIN`, or the config file.
#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// Admin endpoint, e.g. http://127.0.0.1:9180
    #[arg(long, env = "CUTOVER_ADMIN")]
    admin: Option<String>,
    /// Config file to read `admin.listen` from when no --admin is given.
    #[arg(short, long, default_value = "deploy.yaml")]
    config: PathBuf,
}

impl AdminArgs {
    /// Endpoint from `admin`, else from the config file `config`.
    pub fn new(admin: Option<String>, config: PathBuf) -> Self {
        Self { admin, config }
    }
}

/// A tiny admin API client (one request per connection).
pub struct AdminClient {
    authority: String,
    token: Option<String>,
}

impl AdminClient {
    /// Resolves the endpoint and picks up `$CUTOVER_ADMIN_TOKEN`.
    pub fn new(args: &AdminArgs) -> anyhow::Result<Self> {
        let url = match &args.admin {
            Some(url) => url.clone(),
            None => {
                let config = cutover_control::config::load(&args.config)
                    .map_err(|e| anyhow::anyhow!("no --admin or CUTOVER_ADMIN given, and {e}"))?;
                format!("http://{}", config.admin.listen)
            }
        };
        let authority = url
            .trim_end_matches('/')
            .strip_prefix("http://")
            .with_context(|| format!("admin URL {url:?} must start with http://"))?
            .to_string();
        let token = std::env::var("CUTOVER_ADMIN_TOKEN").ok().filter(|t| !t.is_empty());
        Ok(Self { authority, token })
    }

    /// GET `path`, parsed as JSON; a non-2xx answer is an error with the
    /// API's message.
    pub async fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        let (status, body) = self.request("GET", path, None, Bytes::new()).await?;
        let value: Value = serde_json::from_slice(&body)
            .with_context(|| format!("admin API answered {status} with a body that is not JSON"))?;
        if !status.is_success() {
            bail!(
                "admin API answered {status}: {}",
                value["error"].as_str().unwrap_or("unknown error")
            );
        }
        Ok(value)
    }

    /// POST the JSON `body` to `path`; the status and parsed JSON answer.
    /// An empty body is sent as `{}`: the API refuses (415) a POST that
    /// does not say it carries JSON, so every POST carries some.
    pub async fn post_json(&self, path: &str, body: Bytes) -> anyhow::Result<(http::StatusCode, Value)> {
        let body = if body.is_empty() {
            Bytes::from_static(b"{}")
        } else {
            body
        };
        self.post(path, "application/json", body).await
    }

    /// POST a deploy.yaml to `path` (`/push`) as `application/yaml`.
    pub async fn post_yaml(&self, path: &str, body: Bytes) -> anyhow::Result<(http::StatusCode, Value)> {
        self.post(path, "application/yaml", body).await
    }

    async fn post(&self, path: &str, content_type: &str, body: Bytes) -> anyhow::Result<(http::StatusCode, Value)> {
        let (status, body) = self.request("POST", path, Some(content_type), body).await?;
        let value: Value = serde_json::from_slice(&body)
            .with_context(|| format!("admin API answered {status} with a body that is not JSON"))?;
        Ok((status, value))
    }

    /// Opens `path` as a stream (SSE); returns the response to read from.
    pub async fn stream(&self, path: &str) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
        let stream = TcpStream::connect(&self.authority)
            .await
            .with_context(|| format!("cannot reach cutover's admin endpoint at {}", self.authority))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let mut request = http::Request::builder()
            .uri(path)
            .header(http::header::HOST, &self.authority)
            .header(http::header::ACCEPT, "text/event-stream");
        if let Some(token) = &self.token {
            request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let response = sender.send_request(request.body(Full::new(Bytes::new()))?).await?;
        if !response.status().is_success() {
            bail!("admin API answered {} for {path}", response.status());
        }
        Ok(response)
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> anyhow::Result<(http::StatusCode, Bytes)> {
        let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&self.authority))
            .await
            .with_context(|| format!("admin endpoint {} did not answer", self.authority))?
            .with_context(|| {
                format!(
                    "cannot reach cutover's admin endpoint at {} (is `cutover up` running?)",
                    self.authority
                )
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let conn = tokio::spawn(conn);
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, &self.authority);
        if let Some(content_type) = content_type {
            request = request.header(http::header::CONTENT_TYPE, content_type);
        }
        if let Some(token) = &self.token {
            request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let response = sender.send_request(request.body(Full::new(body))?).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        conn.abort();
        Ok((status, body))
    }
}

/// `cutover status [--json] [--watch]`.
pub async fn status(args: AdminArgs, json: bool, watch: bool) -> anyhow::Result<ExitCode> {
    let client = AdminClient::new(&args)?;
    loop {
        let status = client.get_json("/status").await?;
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

/// The human table of `cutover status`.
fn render_status(status: &Value) -> String {
    let mut out = String::new();
    let empty = Vec::new();
    for app in status["apps"].as_array().unwrap_or(&empty) {
        out.push_str(&format!(
            "app {}  version {}\n",
            app["name"].as_str().unwrap_or("?"),
            app["version"].as_str().unwrap_or("?")
        ));
        out.push_str(&format!(
            "  {:<18} {:<9} {:<13} {:<22} {:<10} {:>9} {:>10}\n",
            "INSTANCE", "ROLE", "VERSION", "ADDRESS", "STATE", "IN-FLIGHT", "LONG-LIVED"
        ));
        for i in app["instances"].as_array().unwrap_or(&empty) {
            out.push_str(&format!(
                "  {:<18} {:<9} {:<13} {:<22} {:<10} {:>9} {:>10}\n",
                i["name"].as_str().unwrap_or("?"),
                i["role"].as_str().unwrap_or("?"),
                i["version"].as_str().unwrap_or("?"),
                i["address"].as_str().unwrap_or("-"),
                i["state"].as_str().unwrap_or("?"),
                i["inflight"].as_u64().unwrap_or(0),
                i["long_lived"].as_u64().unwrap_or(0),
            ));
        }
    }
    for d in status["deployments"].as_array().unwrap_or(&empty) {
        out.push_str(&format!(
            "deployment {} of {} ({}): phase {}\n",
            d["id"].as_str().unwrap_or("?"),
            d["app"].as_str().unwrap_or("?"),
            d["strategy"].as_str().unwrap_or("?"),
            d["phase"].as_str().unwrap_or("-"),
        ));
    }
    if let Some(staged) = status["staged"].as_object() {
        for (app, version) in staged {
            out.push_str(&format!(
                "staged: {app} version {} (run `cutover deploy {app}`)\n",
                version.as_str().unwrap_or("?")
            ));
        }
    }
    out.push_str(&format!(
        "route table generation {}\n",
        status["route_table_generation"].as_u64().unwrap_or(0)
    ));
    out
}

/// `cutover deploy [APP] [--strategy S] [--no-wait]`.
pub async fn deploy(
    args: AdminArgs,
    app: Option<String>,
    strategy: Option<String>,
    no_wait: bool,
) -> anyhow::Result<ExitCode> {
    let client = AdminClient::new(&args)?;
    let body = serde_json::json!({ "app": app, "strategy": strategy });
    let (status, answer) = client.post_json("/deploy", Bytes::from(body.to_string())).await?;
    if !status.is_success() {
        let running = answer["id"]
            .as_str()
            .map(|id| format!(" (running: {id})"))
            .unwrap_or_default();
        bail!("{}{running}", answer["error"].as_str().unwrap_or("deploy refused"));
    }
    let ids = started_ids(&answer["deployments"]);
    follow_all(&client, &ids, no_wait).await
}

/// `cutover push [FILE] [--deploy-strategy S] [--no-wait]`.
pub async fn push(args: AdminArgs, file: PathBuf, strategy: Option<String>, no_wait: bool) -> anyhow::Result<ExitCode> {
    let source = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let client = AdminClient::new(&args)?;
    let path = match &strategy {
        Some(s) => format!("/push?deploy_strategy={s}"),
        None => "/push".to_string(),
    };
    let (status, report) = client.post_yaml(&path, Bytes::from(source)).await?;
    if !status.is_success() {
        eprintln!("{}: push refused ({status}):", file.display());
        for line in report["error"].as_str().unwrap_or("unknown error").lines() {
            eprintln!("  {line}");
        }
        return Ok(ExitCode::FAILURE);
    }
    let list = |key: &str| -> Vec<String> {
        report[key]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    };
    for (key, label) in [
        ("added", "started"),
        ("removed", "removed"),
        ("staged", "staged (run `cutover deploy` to apply)"),
    ] {
        for app in list(key) {
            println!("{app}: {label}");
        }
    }
    if report["routes_changed"].as_bool() == Some(true) {
        println!("routes and proxy settings: applied");
    }
    for warning in list("warnings") {
        println!("warning: {warning}");
    }
    let ids = started_ids(&report["deployments"]);
    if ids.is_empty() {
        if list("staged").is_empty() && list("added").is_empty() && list("removed").is_empty() {
            println!("no app changed");
        }
        return Ok(ExitCode::SUCCESS);
    }
    follow_all(&client, &ids, no_wait).await
}

/// `cutover history [APP]`.
pub async fn history(args: AdminArgs, app: Option<String>) -> anyhow::Result<ExitCode> {
    let client = AdminClient::new(&args)?;
    let deployments = client.get_json("/deployments").await?;
    let empty = Vec::new();
    println!(
        "{:<14} {:<10} {:<10} {:<12} {:<25} {:>9}  PHASES",
        "ID", "APP", "STRATEGY", "OUTCOME", "STARTED", "DURATION"
    );
    for d in deployments.as_array().unwrap_or(&empty) {
        if app.as_deref().is_some_and(|a| d["app"] != a) {
            continue;
        }
        let phases: Vec<String> = d["phases"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .map(|p| {
                let ms = p["duration_ms"]
                    .as_u64()
                    .map(|ms| format!(" {:.1}s", ms as f64 / 1000.0))
                    .unwrap_or_default();
                format!("{}{ms}", p["phase"].as_str().unwrap_or("?"))
            })
            .collect();
        println!(
            "{:<14} {:<10} {:<10} {:<12} {:<25} {:>9}  {}",
            d["id"].as_str().unwrap_or("?"),
            d["app"].as_str().unwrap_or("?"),
            d["strategy"].as_str().unwrap_or("?"),
            d["outcome"].as_str().unwrap_or("running"),
            d["started_at"].as_str().unwrap_or("?"),
            d["duration_ms"]
                .as_u64()
                .map(|ms| format!("{:.1}s", ms as f64 / 1000.0))
                .unwrap_or_else(|| "-".into()),
            phases.join(", "),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `cutover certs [--reload] [--json]`.
pub async fn certs(args: AdminArgs, reload: bool, json: bool) -> anyhow::Result<ExitCode> {
    let client = AdminClient::new(&args)?;
    let body = if reload {
        let (status, answer) = client.post_json("/certificates/reload", Bytes::new()).await?;
        if !status.is_success() {
            eprintln!("certificate reload refused ({status}); the certificates in use stay:");
            for line in answer["error"].as_str().unwrap_or("unknown error").lines() {
                eprintln!("  {line}");
            }
            return Ok(ExitCode::FAILURE);
        }
        answer
    } else {
        client.get_json("/certificates").await?
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

/// The human table of `cutover certs`.
fn render_certs(body: &Value) -> String {
    let empty = Vec::new();
    let certs = body["certificates"].as_array().unwrap_or(&empty);
    if certs.is_empty() {
        return "no certificates (proxy.tls has no certificates, or cutover started without it)\n".to_string();
    }
    let mut out = format!(
        "{:<30} {:<6} {:<21} {:<36} {}\n",
        "HOST", "SOURCE", "EXPIRES", "ISSUER", "STATE"
    );
    for cert in certs {
        let state = match cert["acme"].as_object() {
            None => format!("file {}", cert["cert"].as_str().unwrap_or("-")),
            Some(acme) => {
                let mut state = acme.get("state").and_then(Value::as_str).unwrap_or("?").to_string();
                if let Some(next) = acme.get("next_attempt").and_then(Value::as_str) {
                    state.push_str(&format!(", next attempt {next}"));
                }
                if let Some(error) = acme.get("last_error").and_then(Value::as_str) {
                    state.push_str(&format!(", last error: {error}"));
                }
                state
            }
        };
        out.push_str(&format!(
            "{:<30} {:<6} {:<21} {:<36} {}\n",
            cert["host"].as_str().unwrap_or("?"),
            cert["source"].as_str().unwrap_or("?"),
            cert["not_after"].as_str().unwrap_or("-"),
            cert["issuer"].as_str().unwrap_or("-"),
            state,
        ));
    }
    out
}

fn started_ids(deployments: &Value) -> Vec<String> {
    deployments
        .as_array()
        .map(|a| a.iter().filter_map(|d| d["id"].as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

async fn follow_all(client: &AdminClient, ids: &[String], no_wait: bool) -> anyhow::Result<ExitCode> {
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
    let before = client.get_json("/status").await?["pid"].as_u64();
    let body = serde_json::json!({ "binary": binary });
    let (status, answer) = client.post_json("/upgrade", Bytes::from(body.to_string())).await?;
    if !status.is_success() {
        let running = answer["id"]
            .as_str()
            .map(|id| format!(" (running: {id})"))
            .unwrap_or_default();
        bail!("{}{running}", answer["error"].as_str().unwrap_or("upgrade refused"));
    }
    let id = answer["id"]
        .as_str()
        .context("the admin API answered without an upgrade id")?;
    match crate::follow::follow_upgrade(&client, id).await {
        Ok(outcome) if outcome == "succeeded" => Ok(ExitCode::SUCCESS),
        Ok(_) => Ok(ExitCode::FAILURE),
        Err(e) => {
            // The old process may have gone before its last event got out:
            // the answer is whoever serves now.
            let now = client.get_json("/status").await.ok().and_then(|s| s["pid"].as_u64());
            match (before, now) {
                (Some(before), Some(now)) if before != now => {
                    println!("upgraded: cutover now runs as pid {now}");
                    Ok(ExitCode::SUCCESS)
                }
                _ => Err(e),
            }
        }
    }
}
