//! The table at the end, and the results file's name.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use crate::{Figures, Knobs, Notify, CLOSE_GRACE, CLOSE_MARGIN, SPREAD};

pub fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

pub fn opt<T>(v: Option<T>, show: impl Fn(T) -> String) -> String {
    v.map(show).unwrap_or_else(|| "-".into())
}

pub fn table(figures: &[Figures], knobs: &Knobs) -> String {
    let (ka, ws) = (knobs.keepalive, knobs.websockets);
    let by_name = |name: &str| figures.iter().find(|f| f.name == name);
    // Ratio columns: (title, numerator, denominator), for the per-connection rows.
    let ratios: Vec<(String, &Figures, &Figures)> = [("cutover", "haproxy"), ("cutover", "before")]
        .into_iter()
        .filter_map(|(a, b)| Some((format!("{a}/{b}"), by_name(a)?, by_name(b)?)))
        .collect();
    let ratio = |a: &Figures, b: &Figures, get: fn(&Figures) -> Option<f64>| match (get(a), get(b)) {
        (Some(x), Some(y)) if y > 0.0 => format!("{:.1}x", x / y),
        _ => "-".into(),
    };
    type Row = (String, Vec<String>, Option<fn(&Figures) -> Option<f64>>);
    let row = |label: String, cell: &dyn Fn(&Figures) -> String, per: Option<fn(&Figures) -> Option<f64>>| -> Row {
        (label, figures.iter().map(cell).collect(), per)
    };
    let opened =
        |n: usize, got: usize, timed_out: bool| format!("{got}/{n}{}", if timed_out { " timed out" } else { "" });
    let vs = |after: Option<u64>, idle: Option<u64>| match (after, idle) {
        (Some(a), Some(i)) => format!("{} ({:+.1})", mib(a), (a as f64 - i as f64) / 1024.0),
        _ => "-".into(),
    };
    let notified = |f: &Figures, show: &dyn Fn(&Notify) -> String| f.notify.as_ref().map_or("-".into(), show);
    let secs = |d: Option<Duration>| opt(d, |d| format!("{:.2}", d.as_secs_f64()));
    let rows: Vec<Row> = vec![
        row("idle RSS, MiB".into(), &|f| opt(f.ka_idle, mib), None),
        row(
            format!("keep-alive opened (of {ka})"),
            &|f| opened(ka, f.ka_opened, f.ka_timed_out),
            None,
        ),
        row(
            "keep-alive KiB/conn".into(),
            &|f| opt(f.ka_per_conn(), |v| format!("{v:.2}")),
            Some(Figures::ka_per_conn),
        ),
        row(
            "keep-alive RSS after close, MiB (vs phase start)".into(),
            &|f| vs(f.ka_after_close, f.ka_idle),
            None,
        ),
        row(
            format!("WebSocket opened (of {ws})"),
            &|f| opened(ws, f.ws_opened, f.ws_timed_out),
            None,
        ),
        row(
            "WebSocket KiB/conn".into(),
            &|f| opt(f.ws_per_conn(), |v| format!("{v:.2}")),
            Some(Figures::ws_per_conn),
        ),
        row(
            "WebSocket RSS after close, MiB (vs phase start)".into(),
            &|f| vs(f.ws_after_close, f.ws_idle),
            None,
        ),
        row(
            "deploy: 1012 received".into(),
            &|f| notified(f, &|m| format!("{}/{}", m.got_1012, f.ws_opened)),
            None,
        ),
        row(
            "deploy: first / last close, s".into(),
            &|f| notified(f, &|m| format!("{} / {}", secs(m.first), secs(m.last))),
            None,
        ),
        row(
            format!(
                "deploy: all closed, last-first <= {}s",
                (SPREAD + CLOSE_GRACE + CLOSE_MARGIN).as_secs()
            ),
            &|f| {
                notified(f, &|m| {
                    if m.in_time(f.ws_opened) {
                        "yes".into()
                    } else {
                        "NO".into()
                    }
                })
            },
            None,
        ),
        row(
            "deploy: RSS before/peak/after, MiB".into(),
            &|f| {
                notified(f, &|m| {
                    format!("{} / {} / {}", mib(m.before), mib(m.peak), mib(m.after))
                })
            },
            None,
        ),
    ];
    let mut header = vec!["".to_string()];
    header.extend(figures.iter().map(|f| f.name.clone()));
    header.extend(ratios.iter().map(|(title, _, _)| title.clone()));
    let mut cells = vec![header];
    for (label, values, per) in rows {
        let mut line = vec![label];
        line.extend(values);
        line.extend(
            ratios
                .iter()
                .map(|(_, a, b)| per.map_or(String::new(), |get| ratio(a, b, get))),
        );
        cells.push(line);
    }
    let widths: Vec<usize> = (0..cells[0].len())
        .map(|c| cells.iter().map(|l| l[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for line in &cells {
        let mut text = String::new();
        for (c, cell) in line.iter().enumerate() {
            if c == 0 {
                let _ = write!(text, "{cell:<w$}", w = widths[c]);
            } else {
                let _ = write!(text, "  {cell:>w$}", w = widths[c]);
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

/// `YYYYMMDDTHHMMSSZ`, UTC, without a date crate.
pub fn timestamp() -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}
