//! The access log writer: a `tracing` layer that takes the proxy's access
//! events (target `cutover::access`), copies their fields, and hands them
//! to a writer thread that formats (logfmt-style or JSON) and writes in
//! batches.
//!
//! The request path pays only for copying a handful of fields; formatting,
//! timestamps and I/O happen on the writer thread, which drains the queue
//! every 20 ms (so no request ever wakes it). When the writer falls a
//! queue behind, records are dropped rather than requests slowed (and the
//! drops are reported in the log).

use std::io::{BufWriter, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// Records waiting for the writer at most.
const QUEUE: usize = 64 * 1024;
/// Bytes buffered before a write(2).
const BUFFER: usize = 64 * 1024;
/// How often the writer drains the queue (the most a line waits).
const BATCH_EVERY: Duration = Duration::from_millis(20);

/// One field value, copied off the request path.
enum Value {
    Str(String),
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
}

struct Record {
    at: SystemTime,
    message: String,
    fields: Vec<(&'static str, Value)>,
}

enum Msg {
    Record(Record),
    /// Flush and acknowledge (at exit).
    Flush(SyncSender<()>),
}

/// The layer: install it with a `Targets` filter for the access target.
pub struct AccessLayer {
    tx: SyncSender<Msg>,
    dropped: Arc<AtomicU64>,
}

/// Flushes the access log when dropped (keep it until exit).
pub struct FlushGuard {
    tx: SyncSender<Msg>,
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        let (ack, done) = sync_channel(1);
        if self.tx.send(Msg::Flush(ack)).is_ok() {
            let _ = done.recv_timeout(Duration::from_secs(2));
        }
    }
}

/// Starts the writer thread on `out`.
pub fn layer(out: Box<dyn Write + Send>, json: bool) -> std::io::Result<(AccessLayer, FlushGuard)> {
    let (tx, rx) = sync_channel(QUEUE);
    let dropped = Arc::new(AtomicU64::new(0));
    let seen_drops = Arc::clone(&dropped);
    std::thread::Builder::new()
        .name("access-log".into())
        .spawn(move || write_loop(rx, out, json, seen_drops))?;
    Ok((
        AccessLayer {
            tx: tx.clone(),
            dropped,
        },
        FlushGuard { tx },
    ))
}

impl<S: Subscriber> Layer<S> for AccessLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut record = Record {
            at: SystemTime::now(),
            message: String::new(),
            fields: Vec::with_capacity(16),
        };
        event.record(&mut Copier(&mut record));
        match self.tx.try_send(Msg::Record(record)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

struct Copier<'a>(&'a mut Record);

impl Visit for Copier<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, Value::Str(value.to_string()));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field, Value::U64(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, Value::I64(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.push(field, Value::F64(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, Value::Bool(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.push(field, Value::Str(format!("{value:?}")));
    }
}

impl Copier<'_> {
    fn push(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            if let Value::Str(message) = value {
                self.0.message = message;
            }
            return;
        }
        self.0.fields.push((field.name(), value));
    }
}

fn write_loop(rx: Receiver<Msg>, out: Box<dyn Write + Send>, json: bool, dropped: Arc<AtomicU64>) {
    let mut out = BufWriter::with_capacity(BUFFER, out);
    let mut line = String::with_capacity(512);
    let mut reported_drops = 0;
    loop {
        // Wake on a clock, not per record: a wake-up per request would cost
        // the request path a futex call and a context switch.
        std::thread::sleep(BATCH_EVERY);
        loop {
            match rx.try_recv() {
                Ok(Msg::Record(record)) => {
                    line.clear();
                    format_record(&mut line, &record, json);
                    let _ = out.write_all(line.as_bytes());
                }
                Ok(Msg::Flush(ack)) => {
                    let _ = out.flush();
                    let _ = ack.send(());
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    let _ = out.flush();
                    return;
                }
            }
        }
        let _ = out.flush();
        let drops = dropped.load(Ordering::Relaxed);
        if drops > reported_drops {
            tracing::warn!(
                dropped = drops - reported_drops,
                "access log fell behind; records dropped"
            );
            reported_drops = drops;
        }
    }
}

/// One line: `ts=… msg=request key=value …` or a JSON object.
fn format_record(line: &mut String, record: &Record, json: bool) {
    use std::fmt::Write as _;
    let at = humantime::format_rfc3339_millis(record.at);
    if json {
        let _ = write!(line, "{{\"timestamp\":\"{at}\",\"message\":");
        push_json_str(line, &record.message);
        for (name, value) in &record.fields {
            let _ = write!(line, ",\"{name}\":");
            match value {
                Value::Str(s) => push_json_str(line, s),
                Value::U64(v) => {
                    let _ = write!(line, "{v}");
                }
                Value::I64(v) => {
                    let _ = write!(line, "{v}");
                }
                Value::F64(v) if v.is_finite() => {
                    let _ = write!(line, "{v:.3}");
                }
                Value::F64(_) => line.push_str("null"),
                Value::Bool(v) => {
                    let _ = write!(line, "{v}");
                }
            }
        }
        line.push_str("}\n");
    } else {
        let _ = write!(line, "{at} {}", record.message);
        for (name, value) in &record.fields {
            let _ = match value {
                Value::Str(s) if s.is_empty() || s.contains([' ', '"']) => write!(line, " {name}={s:?}"),
                Value::Str(s) => write!(line, " {name}={s}"),
                Value::U64(v) => write!(line, " {name}={v}"),
                Value::I64(v) => write!(line, " {name}={v}"),
                Value::F64(v) => write!(line, " {name}={v:.3}"),
                Value::Bool(v) => write!(line, " {name}={v}"),
            };
        }
        line.push('\n');
    }
}

fn push_json_str(line: &mut String, s: &str) {
    match serde_json::to_string(s) {
        Ok(quoted) => line.push_str(&quoted),
        Err(_) => line.push_str("\"\""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            at: SystemTime::UNIX_EPOCH,
            message: "request".into(),
            fields: vec![
                ("method", Value::Str("GET".into())),
                ("path", Value::Str("/a b\"c".into())),
                ("status", Value::U64(200)),
                ("duration_ms", Value::F64(1.23456)),
                ("app", Value::Str(String::new())),
            ],
        }
    }

    #[test]
    fn json_lines_parse() {
        let mut line = String::new();
        format_record(&mut line, &record(), true);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["timestamp"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["path"], "/a b\"c");
        assert_eq!(v["status"], 200);
        assert_eq!(v["duration_ms"], 1.235);
        assert_eq!(v["app"], "");
    }

    #[test]
    fn human_lines_quote_what_needs_it() {
        let mut line = String::new();
        format_record(&mut line, &record(), false);
        assert_eq!(
            line,
            "1970-01-01T00:00:00.000Z request method=GET path=\"/a b\\\"c\" status=200 duration_ms=1.235 app=\"\"\n"
        );
    }
}
