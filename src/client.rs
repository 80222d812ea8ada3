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
        let token = std::env::var("CUTOVER_ADMIN_TOKEN")
            .ok()
            .filter(|t| !t.is_empty());
        Ok(Self { authority, token })
    }

    /// GET `path`, parsed as JSON; a non-2xx answer is an error with the
    /// API's message.
    pub async fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        let (status, body) = self.request("GET", path, Bytes::new()).await?;
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

    async fn request(
        &self,
        method: &str,
        path: &str,
        body: Bytes,
    ) -> anyhow::Result<(http::StatusCode, Bytes)> {
        let stream =
            tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&self.authority))
                .await
                .with_context(|| format!("admin endpoint {} did not answer", self.authority))?
                .with_context(|| {
                    format!(
                        "cannot reach cutover's admin endpoint at {} (is `cutover up` running?)",
                        self.authority
                    )
                })?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let conn = tokio::spawn(conn);
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, &self.authority);
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
            "  {:<18} {:<9} {:<13} {:<22} {:<10} {:>9}\n",
            "INSTANCE", "ROLE", "VERSION", "ADDRESS", "STATE", "IN-FLIGHT"
        ));
        for i in app["instances"].as_array().unwrap_or(&empty) {
            out.push_str(&format!(
                "  {:<18} {:<9} {:<13} {:<22} {:<10} {:>9}\n",
                i["name"].as_str().unwrap_or("?"),
                i["role"].as_str().unwrap_or("?"),
                i["version"].as_str().unwrap_or("?"),
                i["address"].as_str().unwrap_or("-"),
                i["state"].as_str().unwrap_or("?"),
                i["inflight"].as_u64().unwrap_or(0),
            ));
        }
    }
    out.push_str(&format!(
        "route table generation {}\n",
        status["route_table_generation"].as_u64().unwrap_or(0)
    ));
    out
}
