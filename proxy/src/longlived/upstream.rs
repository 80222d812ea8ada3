//! The backend side of a taken-over request: send the request head, read
//! the response head, and forward a response that turned out not to be
//! long-lived.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use pingora::{Error, ErrorType, OrErr, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::events::ChunkedDecoder;

/// The largest response head accepted from a backend.
const MAX_HEAD: usize = 64 * 1024;

/// A backend's response head and the bytes that came after it.
pub struct Head {
    pub response: ResponseHeader,
    /// Body (or WebSocket) bytes read along with the head.
    pub rest: Bytes,
}

impl Head {
    /// The value of a response header, if it is text.
    pub fn header(&self, name: http::HeaderName) -> Option<&str> {
        self.response.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Writes `request` and reads the response head, within `timeout`.
pub async fn exchange(upstream: &mut TcpStream, request: &RequestHeader, timeout: Duration) -> Result<Head> {
    let wire = pingora::protocols::http::v1::client::http_req_header_to_wire(request)
        .ok_or_else(|| Error::explain(ErrorType::InvalidHTTPHeader, "request head cannot be serialised"))?;
    tokio::time::timeout(timeout, async {
        upstream
            .write_all(&wire)
            .await
            .or_err(ErrorType::WriteError, "while sending the request head to the backend")?;
        read_head(upstream).await
    })
    .await
    .or_err(
        ErrorType::ReadTimedout,
        "the backend did not answer the request head in time",
    )?
}

async fn read_head(upstream: &mut TcpStream) -> Result<Head> {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        let n = upstream
            .read_buf(&mut buf)
            .await
            .or_err(ErrorType::ReadError, "while reading the backend's response head")?;
        if n == 0 {
            return Error::e_explain(
                ErrorType::ConnectionClosed,
                "the backend closed before its response head",
            );
        }
        let mut slots = [httparse::EMPTY_HEADER; 128];
        let mut parsed = httparse::Response::new(&mut slots);
        match parsed.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let code = parsed.code.unwrap_or(502);
                let mut response = ResponseHeader::build(code, Some(parsed.headers.len()))?;
                for h in parsed.headers.iter() {
                    response.append_header(h.name.to_string(), h.value)?;
                }
                let rest = buf.split_off(len).freeze();
                return Ok(Head { response, rest });
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => continue,
            Ok(httparse::Status::Partial) => {
                return Error::e_explain(ErrorType::InvalidHTTPHeader, "the backend's response head is too large")
            }
            Err(e) => {
                return Error::e_explain(
                    ErrorType::InvalidHTTPHeader,
                    format!("bad response head from the backend: {e}"),
                )
            }
        }
    }
}

/// Reads a response body from the backend as payload bytes, whatever its
/// framing (`Content-Length`, chunked, or until the backend closes).
pub struct BodyReader {
    framing: Framing,
    /// Bytes that came with the head, not yet decoded.
    pending: Option<Bytes>,
    buf: Vec<u8>,
}

enum Framing {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
}

impl BodyReader {
    /// The reader for the body that follows `head`.
    pub fn new(head: &Head) -> Self {
        let chunked = head
            .header(http::header::TRANSFER_ENCODING)
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let length = head
            .header(http::header::CONTENT_LENGTH)
            .and_then(|v| v.trim().parse::<u64>().ok());
        let framing = match (chunked, length) {
            (true, _) => Framing::Chunked(ChunkedDecoder::new()),
            (false, Some(n)) => Framing::Length(n),
            (false, None) => Framing::UntilClose,
        };
        Self {
            framing,
            pending: Some(head.rest.clone()).filter(|r| !r.is_empty()),
            buf: vec![0; 16 * 1024],
        }
    }

    /// True when the whole body was read.
    pub fn is_done(&self) -> bool {
        match &self.framing {
            Framing::Length(left) => *left == 0,
            Framing::Chunked(d) => d.is_done(),
            Framing::UntilClose => false,
        }
    }

    /// The next payload bytes; `None` at the end of the body.
    pub async fn next(&mut self, upstream: &mut TcpStream) -> Result<Option<Bytes>> {
        loop {
            if self.is_done() {
                return Ok(None);
            }
            let raw = match self.pending.take() {
                Some(raw) => raw,
                None => {
                    let n = upstream
                        .read(&mut self.buf)
                        .await
                        .or_err(ErrorType::ReadError, "reading the backend's body")?;
                    if n == 0 {
                        return match self.framing {
                            Framing::UntilClose => Ok(None),
                            _ => Error::e_explain(ErrorType::ConnectionClosed, "the backend closed mid-body"),
                        };
                    }
                    Bytes::copy_from_slice(&self.buf[..n])
                }
            };
            let payload = match &mut self.framing {
                Framing::UntilClose => raw,
                Framing::Length(left) => {
                    let take = raw.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    *left -= take as u64;
                    raw.slice(..take)
                }
                Framing::Chunked(decoder) => {
                    let mut out = Vec::with_capacity(raw.len());
                    decoder
                        .decode(&raw, &mut out)
                        .or_err(ErrorType::InvalidHTTPHeader, "decoding the backend's chunked body")?;
                    Bytes::from(out)
                }
            };
            if !payload.is_empty() {
                return Ok(Some(payload));
            }
        }
    }
}

/// Forwards an ordinary response (the backend refused the upgrade, or the
/// answer is not an event stream): the head, then the body. The client
/// connection is not reused afterwards.
pub async fn forward_plain(session: &mut Session, upstream: &mut TcpStream, head: Head) -> Result<()> {
    let mut body = BodyReader::new(&head);
    let mut response = head.response;
    response.insert_header(http::header::CONNECTION, "close")?;
    session.set_keepalive(None);
    let status = response.status.as_u16();
    let no_body = body.is_done() || status == 204 || status == 304;
    session.write_response_header(Box::new(response), no_body).await?;
    if no_body {
        return Ok(());
    }
    while let Some(bytes) = body.next(upstream).await? {
        session.write_response_body(Some(bytes), false).await?;
    }
    session.write_response_body(None, true).await
}
