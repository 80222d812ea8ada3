//! Logs: cutover's own (stderr) and the access log (stdout, a file, or
//! off), human-readable or JSON; `RUST_LOG` sets the level of the former.
//!
//! The access log goes through a non-blocking writer (a dedicated thread
//! does the I/O, in batches), so a slow disk or a full pipe never stalls a
//! request; if the writer falls more than its queue behind, lines are
//! dropped rather than requests slowed.

use std::io::BufWriter;
use std::path::PathBuf;
use std::str::FromStr;

use cutover_proxy::access::ACCESS_TARGET;
use tracing_appender::non_blocking::WorkerGuard;
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

/// The writer thread drains every line queued, then flushes: under load
/// one write(2) carries many lines instead of one each.
const BUFFER: usize = 64 * 1024;

/// Installs the global subscriber. The returned guard flushes the access
/// log when dropped: keep it until exit.
pub fn init(format: LogFormat, access: &AccessLog) -> anyhow::Result<Option<WorkerGuard>> {
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
    let own = own.with_filter(filter).boxed();

    let (access_layer, guard) = match access {
        AccessLog::Off => (None, None),
        AccessLog::Stdout => {
            let (writer, guard) = tracing_appender::non_blocking(BufWriter::with_capacity(BUFFER, std::io::stdout()));
            (Some(access_layer(format, writer)), Some(guard))
        }
        AccessLog::File(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| anyhow::anyhow!("cannot open access log {}: {e}", path.display()))?;
            let (writer, guard) = tracing_appender::non_blocking(BufWriter::with_capacity(BUFFER, file));
            (Some(access_layer(format, writer)), Some(guard))
        }
    };
    let layers: Vec<BoxedLayer> = std::iter::once(own).chain(access_layer).collect();
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))?;
    Ok(guard)
}

fn access_layer(format: LogFormat, writer: tracing_appender::non_blocking::NonBlocking) -> BoxedLayer {
    let only_access = Targets::new().with_target(ACCESS_TARGET, tracing::Level::INFO);
    match format {
        LogFormat::Human => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_ansi(false)
            .with_target(false)
            .with_filter(only_access)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(writer)
            .with_filter(only_access)
            .boxed(),
    }
}
