//! The proxy's own error answers (502, 503, 504 and maintenance), in the
//! form the client asks for: JSON for `Accept: application/json`, HTML for
//! browsers (`Accept` with `text/html`: the app's page file, or a small
//! built-in page), and today's plain text for everything else. Every 503
//! carries `Retry-After`.

use std::io::Read;
use std::path::Path;

use bytes::Bytes;
use http::header::{self, HeaderMap};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

/// The largest page file accepted.
pub const MAX_PAGE_BYTES: u64 = 1024 * 1024;

/// Where `{{message}}` in `maintenance.html` is replaced by the message.
const MESSAGE_PLACEHOLDER: &[u8] = b"{{message}}";

/// `Retry-After` for 503s while the app waits for a backend or a resume.
const RETRY_SOON: &str = "1";
/// `Retry-After` for maintenance answers: longer, nothing will change in a
/// second.
const RETRY_MAINTENANCE: &str = "30";

/// The plain-text and JSON wording of a maintenance answer without a
/// message.
const MAINTENANCE_TEXT: &str = "the app is down for maintenance";

/// An app's error pages (`apps.*.error_pages`): `502.html`, `503.html`,
/// `504.html` and `maintenance.html`, each optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorPages {
    bad_gateway: Option<Bytes>,
    unavailable: Option<Bytes>,
    timeout: Option<Bytes>,
    maintenance: Option<Bytes>,
}

impl ErrorPages {
    /// Reads the pages in `dir`. A missing file is fine (the built-in page
    /// serves); a file that is not a regular file or is over 1 MiB is an
    /// error naming it, as is a directory that cannot be read.
    pub fn from_dir(dir: &Path) -> std::io::Result<ErrorPages> {
        let meta =
            std::fs::metadata(dir).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
        if !meta.is_dir() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{} is not a directory; give the directory holding 502.html, 503.html, 504.html and maintenance.html", dir.display()),
            ));
        }
        Ok(ErrorPages {
            bad_gateway: read_page(&dir.join("502.html"))?,
            unavailable: read_page(&dir.join("503.html"))?,
            timeout: read_page(&dir.join("504.html"))?,
            maintenance: read_page(&dir.join("maintenance.html"))?,
        })
    }

    /// True when no file was given.
    pub fn is_empty(&self) -> bool {
        self.bad_gateway.is_none() && self.unavailable.is_none() && self.timeout.is_none() && self.maintenance.is_none()
    }

    fn file(&self, answer: &Answer<'_>) -> Option<&Bytes> {
        match answer {
            Answer::BadGateway(_) => self.bad_gateway.as_ref(),
            Answer::Unavailable(_) => self.unavailable.as_ref(),
            Answer::GatewayTimeout(_) => self.timeout.as_ref(),
            Answer::Maintenance(_) => self.maintenance.as_ref(),
        }
    }
}

/// One page file: `None` when absent.
fn read_page(path: &Path) -> std::io::Result<Option<Bytes>> {
    let named = |e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    // Checked before opening: opening a FIFO would wait for a writer.
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(named(e)),
    };
    let not_regular = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        )
    };
    if !meta.is_file() {
        return Err(not_regular());
    }
    let file = std::fs::File::open(path).map_err(named)?;
    if !file.metadata().map_err(named)?.is_file() {
        return Err(not_regular());
    }
    let mut bytes = Vec::new();
    // `take` as well as the size: the file may grow while it is read.
    file.take(MAX_PAGE_BYTES + 1).read_to_end(&mut bytes).map_err(named)?;
    if bytes.len() as u64 > MAX_PAGE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{} is larger than 1 MiB; an error page is a small HTML file",
                path.display()
            ),
        ));
    }
    Ok(Some(Bytes::from(bytes)))
}

/// An answer the proxy writes itself; each variant's text is today's
/// plain-text body (with its newline).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer<'a> {
    /// 502: the backend failed to answer.
    BadGateway(&'a str),
    /// 503: no backend (hold timeout, pause timeout, shutting down...).
    Unavailable(&'a str),
    /// 504: the backend did not answer in time.
    GatewayTimeout(&'a str),
    /// 503: the app is in maintenance, with the operator's message.
    Maintenance(Option<&'a str>),
}

/// What the client asked for in `Accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Plain,
    Html,
    Json,
}

/// `application/json` or `text/html`, whichever has the higher `q` (the
/// first listed on a tie); plain text when neither is acceptable.
pub(crate) fn negotiate(headers: &HeaderMap) -> Format {
    let mut best: Option<(Format, f32)> = None;
    for value in headers.get_all(header::ACCEPT) {
        let Ok(value) = value.to_str() else { continue };
        for range in value.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim();
            let format = if media.eq_ignore_ascii_case("application/json") {
                Format::Json
            } else if media.eq_ignore_ascii_case("text/html") {
                Format::Html
            } else {
                continue;
            };
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q=").or_else(|| p.trim().strip_prefix("Q=")))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            if q > 0.0 && best.is_none_or(|(_, best_q)| q > best_q) {
                best = Some((format, q));
            }
        }
    }
    best.map_or(Format::Plain, |(format, _)| format)
}

/// A rendered answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rendered {
    pub(crate) status: u16,
    pub(crate) content_type: &'static str,
    pub(crate) body: Bytes,
    pub(crate) retry_after: Option<&'static str>,
}

impl Answer<'_> {
    pub(crate) fn status(&self) -> u16 {
        match self {
            Answer::BadGateway(_) => 502,
            Answer::Unavailable(_) | Answer::Maintenance(_) => 503,
            Answer::GatewayTimeout(_) => 504,
        }
    }

    fn title(&self) -> &'static str {
        match self {
            Answer::BadGateway(_) => "502 Bad Gateway",
            Answer::Unavailable(_) => "503 Service Unavailable",
            Answer::GatewayTimeout(_) => "504 Gateway Timeout",
            Answer::Maintenance(_) => "Down for maintenance",
        }
    }

    /// The sentence for JSON and HTML (the plain text without newline).
    fn error(&self) -> &str {
        match self {
            Answer::BadGateway(t) | Answer::Unavailable(t) | Answer::GatewayTimeout(t) => t.trim_end(),
            Answer::Maintenance(_) => MAINTENANCE_TEXT,
        }
    }

    /// Renders the answer for `format`, with the app's `pages` if any.
    pub(crate) fn render(&self, format: Format, pages: Option<&ErrorPages>) -> Rendered {
        let status = self.status();
        let retry_after = match self {
            Answer::Maintenance(_) => Some(RETRY_MAINTENANCE),
            _ if status == 503 => Some(RETRY_SOON),
            _ => None,
        };
        let message = match self {
            Answer::Maintenance(m) => Some(m.unwrap_or(MAINTENANCE_TEXT)),
            _ => None,
        };
        let (content_type, body) = match format {
            Format::Json => {
                let mut json = serde_json::json!({ "error": self.error(), "status": status });
                if let Some(message) = message {
                    json["message"] = serde_json::Value::from(message);
                }
                let mut body = json.to_string();
                body.push('\n');
                ("application/json", Bytes::from(body))
            }
            Format::Html => {
                let body = match pages.and_then(|p| p.file(self)) {
                    Some(file) => match message {
                        Some(message) => {
                            Bytes::from(replace(file, MESSAGE_PLACEHOLDER, html_escape(message).as_bytes()))
                        }
                        None => file.clone(),
                    },
                    None => Bytes::from(builtin_html(self.title(), message.unwrap_or(self.error()))),
                };
                ("text/html; charset=utf-8", body)
            }
            Format::Plain => {
                let body = match self {
                    Answer::BadGateway(t) | Answer::Unavailable(t) | Answer::GatewayTimeout(t) => {
                        Bytes::copy_from_slice(t.as_bytes())
                    }
                    Answer::Maintenance(None) => Bytes::from(format!("{MAINTENANCE_TEXT}\n")),
                    Answer::Maintenance(Some(m)) => Bytes::from(format!("{MAINTENANCE_TEXT}: {m}\n")),
                };
                ("text/plain; charset=utf-8", body)
            }
        };
        Rendered {
            status,
            content_type,
            body,
            retry_after,
        }
    }
}

/// Every `needle` in `haystack` replaced by `with`.
fn replace(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len() + with.len());
    let mut rest = haystack;
    while let Some(at) = rest.windows(needle.len()).position(|w| w == needle) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(with);
        rest = &rest[at + needle.len()..];
    }
    out.extend_from_slice(rest);
    out
}

/// `text` safe in HTML text and attribute values.
pub(crate) fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The built-in page: the title and one escaped sentence.
fn builtin_html(title: &str, text: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>{title}</title></head>\n\
         <body><h1>{title}</h1><p>{}</p></body>\n</html>\n",
        html_escape(text)
    )
}

/// Writes `answer` for this request, in the form its `Accept` asks for.
pub(crate) async fn write(
    session: &mut Session,
    answer: Answer<'_>,
    pages: Option<&ErrorPages>,
) -> pingora::Result<()> {
    let rendered = answer.render(negotiate(&session.req_header().headers), pages);
    let mut resp = ResponseHeader::build(rendered.status, Some(5))?;
    resp.insert_header(header::CONTENT_TYPE, rendered.content_type)?;
    resp.insert_header(header::CONTENT_LENGTH, rendered.body.len())?;
    if let Some(seconds) = rendered.retry_after {
        resp.insert_header(header::RETRY_AFTER, seconds)?;
    }
    resp.insert_header(header::CACHE_CONTROL, "no-store")?;
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(rendered.body), true).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> Format {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, value.parse().unwrap());
        negotiate(&headers)
    }

    #[test]
    fn negotiation_follows_accept() {
        assert_eq!(negotiate(&HeaderMap::new()), Format::Plain);
        assert_eq!(accept("*/*"), Format::Plain);
        assert_eq!(
            accept("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
            Format::Html
        );
        assert_eq!(accept("application/json"), Format::Json);
        assert_eq!(accept("application/json, text/html"), Format::Json);
        assert_eq!(accept("text/html, application/json"), Format::Html);
        assert_eq!(accept("text/html;q=0.5, application/json"), Format::Json);
        assert_eq!(accept("application/json;q=0"), Format::Plain);
        assert_eq!(accept("Application/JSON"), Format::Json);
    }

    #[test]
    fn plain_text_is_todays_body() {
        let r = Answer::Unavailable("no ready backend\n").render(Format::Plain, None);
        assert_eq!(
            (r.status, &r.body[..], r.retry_after),
            (503, &b"no ready backend\n"[..], Some("1"))
        );
        assert_eq!(r.content_type, "text/plain; charset=utf-8");
        let r = Answer::BadGateway("the app failed to answer\n").render(Format::Plain, None);
        assert_eq!((r.status, r.retry_after), (502, None));
    }

    #[test]
    fn json_carries_error_status_and_message() {
        let r = Answer::Maintenance(Some("back at \"5\"")).render(Format::Json, None);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["status"], 503);
        assert_eq!(v["error"], MAINTENANCE_TEXT);
        assert_eq!(v["message"], "back at \"5\"");
        assert_eq!(r.content_type, "application/json");
        let r = Answer::GatewayTimeout("too slow\n").render(Format::Json, None);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            (v["status"].as_u64(), v["error"].as_str()),
            (Some(504), Some("too slow"))
        );
        assert!(v.get("message").is_none());
    }

    #[test]
    fn maintenance_page_gets_the_escaped_message() {
        let pages = ErrorPages {
            maintenance: Some(Bytes::from_static(b"<p>{{message}}</p><i>{{message}}</i>")),
            ..ErrorPages::default()
        };
        let r = Answer::Maintenance(Some("<b>&")).render(Format::Html, Some(&pages));
        assert_eq!(&r.body[..], b"<p>&lt;b&gt;&amp;</p><i>&lt;b&gt;&amp;</i>");
        let builtin = Answer::Maintenance(Some("<script>")).render(Format::Html, None);
        let text = std::str::from_utf8(&builtin.body).unwrap();
        assert!(text.contains("&lt;script&gt;") && !text.contains("<script>"), "{text}");
        assert_eq!(builtin.retry_after, Some(RETRY_MAINTENANCE));
    }

    #[test]
    fn from_dir_reads_present_files_and_refuses_bad_ones() {
        let dir = std::env::temp_dir().join(format!("cutover-pages-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("502.html"), "<h1>bad gateway</h1>").unwrap();
        let pages = ErrorPages::from_dir(&dir).unwrap();
        assert_eq!(pages.bad_gateway.as_deref(), Some(&b"<h1>bad gateway</h1>"[..]));
        assert!(pages.unavailable.is_none() && pages.maintenance.is_none());

        std::fs::create_dir_all(dir.join("503.html")).unwrap();
        let e = ErrorPages::from_dir(&dir).unwrap_err();
        assert!(e.to_string().contains("503.html is not a regular file"), "{e}");
        std::fs::remove_dir(dir.join("503.html")).unwrap();

        std::fs::write(dir.join("504.html"), vec![b'x'; MAX_PAGE_BYTES as usize + 1]).unwrap();
        let e = ErrorPages::from_dir(&dir).unwrap_err();
        assert!(e.to_string().contains("larger than 1 MiB"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(ErrorPages::from_dir(&dir).is_err());
    }
}
