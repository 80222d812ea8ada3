//! Client commands: talk to a running cutover's admin API.
//!
//! Every body sent or read is a type of [`cutover_control::api`], the one
//! the server's handlers use: a field renamed on one side breaks the build
//! or a test, never shows up as `?`.
//!
//! - [`commands`]: one function per subcommand (`status`, `deploy`, …).
//! - [`render`]: the human tables (`status`, `history`, `certs`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use cutover_control::api::ErrorBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpStream;

pub mod commands;
mod render;

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

/// A refusal by the admin API: its status and JSON error.
#[derive(Debug)]
pub struct Refused {
    pub status: http::StatusCode,
    pub body: ErrorBody,
}

impl Refused {
    /// The API's message, with the running deployment's id when it named one.
    pub fn message(&self) -> String {
        match &self.body.id {
            Some(id) => format!("{} (running: {id})", self.body.error),
            None => self.body.error.clone(),
        }
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

    /// GET `path` as a `T`; a non-2xx answer is an error with the API's
    /// message.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let (status, body) = self.request("GET", path, None, Bytes::new()).await?;
        match answer(status, &body)? {
            Ok(value) => Ok(value),
            Err(refused) => anyhow::bail!("admin API answered {status}: {}", refused.body.error),
        }
    }

    /// POST `body` as JSON to `path`: the answer as an `A`, or the API's
    /// refusal.
    pub async fn post<B: Serialize, A: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<Result<(http::StatusCode, A), Refused>> {
        let body = Bytes::from(serde_json::to_vec(body)?);
        self.post_bytes(path, "application/json", body).await
    }

    /// POST a deploy.yaml to `path` (`/push`) as `application/yaml`.
    pub async fn post_yaml<A: DeserializeOwned>(
        &self,
        path: &str,
        body: Bytes,
    ) -> anyhow::Result<Result<(http::StatusCode, A), Refused>> {
        self.post_bytes(path, "application/yaml", body).await
    }

    async fn post_bytes<A: DeserializeOwned>(
        &self,
        path: &str,
        content_type: &str,
        body: Bytes,
    ) -> anyhow::Result<Result<(http::StatusCode, A), Refused>> {
        let (status, body) = self.request("POST", path, Some(content_type), body).await?;
        Ok(answer(status, &body)?.map(|value| (status, value)))
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
            anyhow::bail!("admin API answered {} for {path}", response.status());
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

/// A 2xx body as an `A`, or a 4xx/5xx body as the API's error. A body that
/// is neither is an error naming what did not match.
fn answer<A: DeserializeOwned>(status: http::StatusCode, body: &[u8]) -> anyhow::Result<Result<A, Refused>> {
    if status.is_success() {
        serde_json::from_slice(body)
            .map(Ok)
            .with_context(|| format!("admin API answered {status} with a body this cutover does not understand"))
    } else {
        let body = serde_json::from_slice(body)
            .with_context(|| format!("admin API answered {status} with a body that is not its JSON error"))?;
        Ok(Err(Refused { status, body }))
    }
}

/// `segment` for a URL path: unreserved characters as they are, every
/// other byte percent-encoded (an app name is checked by the server, so
/// anything a user types must reach it intact).
fn path_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use cutover_control::api::StatusBody;

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(path_segment("web-1_a.b~"), "web-1_a.b~");
        assert_eq!(path_segment("a b/c?"), "a%20b%2Fc%3F");
        assert_eq!(path_segment("é"), "%C3%A9");
    }

    #[test]
    fn an_answer_missing_a_field_is_an_error_not_a_question_mark() {
        let refused = answer::<StatusBody>(http::StatusCode::OK, br#"{"version": "1"}"#);
        assert!(refused.is_err());
        let error = answer::<StatusBody>(http::StatusCode::CONFLICT, br#"{"error": "busy", "id": "web-2"}"#)
            .unwrap()
            .unwrap_err();
        assert_eq!(error.message(), "busy (running: web-2)");
        assert!(answer::<StatusBody>(http::StatusCode::BAD_GATEWAY, b"<html>").is_err());
    }
}
