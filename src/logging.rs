//! Logs: cutover's own (stderr) and the access log (stdout, a file, or
//! off), human-readable or JSON; `RUST_LOG` sets the level of the former.
//!
//! The access log is formatted and written by its own thread
//! (`access_log.rs`), so a slow disk or a full pipe never stalls a request.

use std::io::Write;
use std::path::PathBuf;
use std::str::FromStr;

use cutover_proxy::access::ACCESS_TARGET;

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
    let own = own.with_filter(filter).boxed();

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
