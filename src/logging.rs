//! Logs: cutover's own (stderr) and the access log (stdout, a file, or
//! off), human-readable or JSON; `RUST_LOG` sets the level of the former.
//!
//! The access log is formatted and written by its own thread
//! (`access_log.rs`), so a slow disk or a full pipe never stalls a request.

use std::io::Write;
use std::path::PathBuf;
use std::str::FromStr;

use cutover_proxy::access::ACCESS_TARGET;
use cutover_proxy::limits::CLOSED_BY_LIMITS;
use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{span, Event, Level, Metadata, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::Context;

use crate::access_log::{self, FlushGuard};
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

/// How log lines look.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// Where the access log goes: `off`, `stdout`, or a file path (appended).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLog {
    Off,
    Stdout,
    File(PathBuf),
}

impl FromStr for AccessLog {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "off" => AccessLog::Off,
            "stdout" | "-" => AccessLog::Stdout,
            path => AccessLog::File(PathBuf::from(path)),
        })
    }
}

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// Installs the global subscriber. The returned guard flushes the access
/// log when dropped: keep it until exit.
pub fn init(format: LogFormat, access: &AccessLog) -> anyhow::Result<Option<FlushGuard>> {
    // Default: info for cutover, warn for the rest (pingora is chatty).
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("warn,cutover=info,cutover_control=info,cutover_proxy=info"))
        .add_directive(format!("{ACCESS_TARGET}=off").parse()?);
    let own: BoxedLayer = match format {
        LogFormat::Human => tracing_subscriber::fmt::layer().with_writer(std::io::stderr).boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    // Filters with level hints (EnvFilter, Targets), not closures: the hint
    // sets `log`'s max level, so pingora's debug! and trace! calls stay a
    // cheap comparison instead of a dispatch per call.
    let own = SkipClosedByLimits(own).with_filter(filter).boxed();

    let out: Option<Box<dyn Write + Send>> = match access {
        AccessLog::Off => None,
        AccessLog::Stdout => Some(Box::new(std::io::stdout())),
        AccessLog::File(path) => Some(Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| anyhow::anyhow!("cannot open access log {}: {e}", path.display()))?,
        )),
    };
    let (access_layer, guard) = match out {
        None => (None, None),
        Some(out) => {
            let (layer, guard) = access_log::layer(out, matches!(format, LogFormat::Json))?;
            let only_access = Targets::new().with_target(ACCESS_TARGET, tracing::Level::INFO);
            (Some(layer.with_filter(only_access).boxed()), Some(guard))
        }
    };
    let layers: Vec<BoxedLayer> = std::iter::once(own).chain(access_layer).collect();
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))?;
    Ok(guard)
}

/// Drops the ERROR lines pingora writes when `proxy.limits` closes a client
/// connection on purpose (a head past its deadline or over 64 KiB, a
/// missing `Host`): pingora logs every failed head read and every failed
/// request at ERROR (`HttpProxy::handle_new_request`,
/// `HttpProxy::handle_error`), and a slowloris would fill the log. Those
/// errors carry [`CLOSED_BY_LIMITS`]; nothing else is dropped.
///
/// A layer wrapper, not a `Filter`: `log` records reach tracing through
/// `tracing_log`, which calls `Dispatch::event` without
/// `Dispatch::event_enabled`, so a filter never sees their message.
struct SkipClosedByLimits<L>(L);

impl<S, L> Layer<S> for SkipClosedByLimits<L>
where
    S: Subscriber,
    L: Layer<S>,
{
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        self.0.on_register_dispatch(subscriber)
    }

    fn on_layer(&mut self, subscriber: &mut S) {
        self.0.on_layer(subscriber)
    }

    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        self.0.register_callsite(metadata)
    }

    fn enabled(&self, metadata: &Metadata<'_>, ctx: Context<'_, S>) -> bool {
        self.0.enabled(metadata, ctx)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        self.0.max_level_hint()
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        self.0.on_new_span(attrs, id, ctx)
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        self.0.on_record(id, values, ctx)
    }

    fn on_follows_from(&self, id: &span::Id, follows: &span::Id, ctx: Context<'_, S>) {
        self.0.on_follows_from(id, follows, ctx)
    }

    fn event_enabled(&self, event: &Event<'_>, ctx: Context<'_, S>) -> bool {
        self.0.event_enabled(event, ctx)
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if !closed_by_limits(event) {
            self.0.on_event(event, ctx)
        }
    }

    fn on_enter(&self, id: &span::Id, ctx: Context<'_, S>) {
        self.0.on_enter(id, ctx)
    }

    fn on_exit(&self, id: &span::Id, ctx: Context<'_, S>) {
        self.0.on_exit(id, ctx)
    }

    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        self.0.on_close(id, ctx)
    }

    fn on_id_change(&self, old: &span::Id, new: &span::Id, ctx: Context<'_, S>) {
        self.0.on_id_change(old, new, ctx)
    }
}

/// Whether `event` is pingora's ERROR line about a connection that
/// `proxy.limits` closed.
fn closed_by_limits(event: &Event<'_>) -> bool {
    // pingora's `log` records arrive with the target "log" (the real one is
    // a field), so only the level and the message tell them apart.
    if *event.metadata().level() != Level::ERROR {
        return false;
    }
    let mut message = MessageContains {
        needle: CLOSED_BY_LIMITS,
        found: false,
    };
    event.record(&mut message);
    message.found
}

/// Whether an event's message contains `needle`.
struct MessageContains {
    needle: &'static str,
    found: bool,
}

impl Visit for MessageContains {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.found |= value.contains(self.needle);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.found |= format!("{value:?}").contains(self.needle);
        }
    }
}
