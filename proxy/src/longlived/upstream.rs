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
pub const MAX_HEAD: usize = 64 * 1024;

/// Why a backend's response head was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("the backend's response head is over 64 KiB")]
    TooLarge,
    #[error("bad response head from the backend: {0}")]
    Syntax(String),
    #[error("the backend sent an unusable header: {0}")]
    Header(String),
    #[error("the backend's Content-Length is not one decimal number (duplicates must agree)")]
    BadContentLength,
}

/// How the body after a response head is framed (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body at all (1xx, 204, 304).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the backend closes.
    UntilClose,
}

/// A backend's response head and the bytes that came after it.
pub struct Head {
    pub response: ResponseHeader,
    /// How the body that follows is framed.
    pub framing: BodyFraming,
    /// Body (or WebSocket) bytes read along with the head.
    pub rest: Bytes,
}

impl Head {
    /// The value of a response header, if it is text.
    pub fn header(&self, name: http::HeaderName) -> Option<&str> {
        self.response.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Parses a response head from the start of `buf`: `Ok(None)` while it is
/// incomplete, else the head, its body framing and the head's length in
/// bytes. A pure function over bytes (fuzzed).
pub fn parse_response_head(buf: &[u8]) -> Result<Option<(ResponseHeader, BodyFraming, usize)>, HeadError> {
    let mut slots = [httparse::EMPTY_HEADER; 128];
    let mut parsed = httparse::Response::new(&mut slots);
    let len = match parsed.parse(buf) {
        // A whole head that arrived in one large read is held to the same
        // limit as one that arrives in pieces.
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
        Ok(httparse::Status::Complete(_)) => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Ok(None),
        Ok(httparse::Status::Partial) => return Err(HeadError::TooLarge),
        Err(e) => return Err(HeadError::Syntax(e.to_string())),
    };
    let code = parsed.code.ok_or_else(|| HeadError::Syntax("no status code".into()))?;
    let mut response =
        ResponseHeader::build(code, Some(parsed.headers.len())).map_err(|e| HeadError::Header(e.to_string()))?;
    for h in parsed.headers.iter() {
        response
            .append_header(h.name.to_string(), h.value)
            .map_err(|e| HeadError::Header(e.to_string()))?;
    }
    let framing = body_framing(&response)?;
    Ok(Some((response, framing, len)))
}

/// The framing of the body after `response` (RFC 9112 §6.3): no body for
/// 1xx/204/304; `Transfer-Encoding` wins over `Content-Length` (chunked
/// when it is the last coding, else until close); `Content-Length` must be
/// bare decimal digits, and duplicates must agree; else until close.
pub fn body_framing(response: &ResponseHeader) -> Result<BodyFraming, HeadError> {
    let status = response.status.as_u16();
    if status < 200 || status == 204 || status == 304 {
        return Ok(BodyFraming::Empty);
    }
    let headers = &response.headers;
    if let Some(last) = headers.get_all(http::header::TRANSFER_ENCODING).iter().next_back() {
        let last_coding = last
            .as_bytes()
            .rsplit(|b| *b == b',')
            .next()
            .unwrap_or(b"")
            .trim_ascii();
        return Ok(if last_coding.eq_ignore_ascii_case(b"chunked") {
            BodyFraming::Chunked
        } else {
            BodyFraming::UntilClose
        });
    }
    let mut length = None;
    for value in headers.get_all(http::header::CONTENT_LENGTH) {
        for token in value.as_bytes().split(|b| *b == b',') {
            let n = parse_content_length(token.trim_ascii()).ok_or(HeadError::BadContentLength)?;
            if length.is_some_and(|seen| seen != n) {
                return Err(HeadError::BadContentLength);
            }
            length = Some(n);
        }
    }
    Ok(length.map_or(BodyFraming::UntilClose, BodyFraming::Length))
}

/// `1*DIGIT` as a u64: no sign, no spaces, no hex (`str::parse` would
/// take `+5`).
pub fn parse_content_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
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
        match parse_response_head(&buf) {
            Ok(None) => continue,
            Ok(Some((response, framing, len))) => {
                let rest = buf.split_off(len).freeze();
                return Ok(Head {
                    response,
                    framing,
                    rest,
                });
            }
            Err(e) => return Error::e_explain(ErrorType::InvalidHTTPHeader, e.to_string()),
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
        let framing = match head.framing {
            BodyFraming::Empty => Framing::Length(0),
            BodyFraming::Length(n) => Framing::Length(n),
            BodyFraming::Chunked => Framing::Chunked(ChunkedDecoder::new()),
            BodyFraming::UntilClose => Framing::UntilClose,
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
                    *left = left.saturating_sub(take as u64);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn framing(head: &str) -> Result<BodyFraming, HeadError> {
        let wire = format!("HTTP/1.1 {head}\r\n\r\n");
        parse_response_head(wire.as_bytes()).map(|parsed| parsed.expect("complete").1)
    }

    #[test]
    fn content_length_must_be_bare_digits() {
        assert_eq!(framing("200 OK\r\nContent-Length: 5"), Ok(BodyFraming::Length(5)));
        // Whitespace around a field value is not part of it (RFC 9110 §5.5).
        assert_eq!(framing("200 OK\r\nContent-Length:  5 "), Ok(BodyFraming::Length(5)));
        for bad in ["+5", "-5", "0x5", "5 5", "5a", "", "99999999999999999999"] {
            assert_eq!(
                framing(&format!("200 OK\r\nContent-Length: {bad}")),
                Err(HeadError::BadContentLength),
                "{bad:?}"
            );
        }
        for bad in [" 5", "5 ", "+5"] {
            assert_eq!(parse_content_length(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn duplicate_content_lengths_must_agree() {
        assert_eq!(
            framing("200 OK\r\nContent-Length: 5\r\nContent-Length: 5"),
            Ok(BodyFraming::Length(5))
        );
        assert_eq!(framing("200 OK\r\nContent-Length: 5, 5"), Ok(BodyFraming::Length(5)));
        assert_eq!(
            framing("200 OK\r\nContent-Length: 5\r\nContent-Length: 6"),
            Err(HeadError::BadContentLength)
        );
        assert_eq!(
            framing("200 OK\r\nContent-Length: 5, 6"),
            Err(HeadError::BadContentLength)
        );
    }

    #[test]
    fn transfer_encoding_wins_over_content_length() {
        assert_eq!(
            framing("200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked"),
            Ok(BodyFraming::Chunked)
        );
        assert_eq!(
            framing("200 OK\r\nTransfer-Encoding: gzip"),
            Ok(BodyFraming::UntilClose)
        );
        assert_eq!(
            framing("200 OK\r\nTransfer-Encoding: gzip, chunked"),
            Ok(BodyFraming::Chunked)
        );
    }

    #[test]
    fn some_answers_have_no_body() {
        assert_eq!(framing("204 No Content\r\nContent-Length: 5"), Ok(BodyFraming::Empty));
        assert_eq!(framing("304 Not Modified"), Ok(BodyFraming::Empty));
        assert_eq!(framing("101 Switching Protocols"), Ok(BodyFraming::Empty));
        assert_eq!(framing("200 OK"), Ok(BodyFraming::UntilClose));
    }

    #[test]
    fn heads_parse_incrementally_and_are_bounded() {
        let wire = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: x\n\n";
        let head_len = wire.len() - b"data: x\n\n".len();
        for end in 0..head_len {
            assert_eq!(
                parse_response_head(&wire[..end]).map(|p| p.is_none()),
                Ok(true),
                "{end}"
            );
        }
        let (response, _, len) = parse_response_head(wire).unwrap().unwrap();
        assert_eq!(len, head_len);
        assert_eq!(response.status.as_u16(), 200);
        let huge = format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(MAX_HEAD));
        assert_eq!(parse_response_head(huge.as_bytes()).err(), Some(HeadError::TooLarge));
        // Whole, but over the limit: refused like one arriving in pieces.
        let whole = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(parse_response_head(whole.as_bytes()).err(), Some(HeadError::TooLarge));
        assert!(matches!(
            parse_response_head(b"HTTP/1.1 2x0 OK\r\n\r\n"),
            Err(HeadError::Syntax(_))
        ));
    }
}
