//! The `cutover` command line (SPEC §2).

mod access_log;
mod client;
mod follow;
mod logging;
mod memory;
mod notify;
mod up;
mod upgrade;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use client::commands;
use cutover_control::api::Strategy;
use cutover_control::config::{self, ConfigError};

#[derive(Debug, Parser)]
#[command(name = "cutover", version, about = "Edge reverse proxy with zero-downtime deploys")]
struct Cli {
    /// Log format for cutover's own logs (RUST_LOG sets the level).
    #[arg(long, global = true, value_enum, default_value = "human")]
    log_format: logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the proxy, the admin endpoint and every app; run until SIGTERM or SIGINT.
    Up {
        /// The config file.
        #[arg(short, long, default_value = "deploy.yaml")]
        config: PathBuf,
        /// Access log: off, stdout, or a file to append to.
        #[arg(long, default_value = "stdout", value_name = "off|stdout|FILE")]
        access_log: logging::AccessLog,
        /// Set by a running cutover on the new binary it starts during an
        /// upgrade: the descriptor of the hand-over channel.
        #[arg(long, hide = true)]
        takeover_fd: Option<i32>,
    },
    /// Replace the running cutover by a new binary without refusing a
    /// connection or restarting an app. Exit 0 once the new process serves;
    /// non-zero, with the old one serving on, otherwise.
    Upgrade {
        /// The new binary; default: the one the running cutover was started from.
        #[arg(long)]
        binary: Option<PathBuf>,
        #[command(flatten)]
        admin: client::AdminArgs,
    },
    /// Check a config file: exit 0, or print every problem and exit 1.
    Validate {
        /// The config file.
        #[arg(short, long, default_value = "deploy.yaml")]
        config: PathBuf,
    },
    /// Deploy the staged changes of an app (or redeploy its current version).
    /// Exit 0 if it succeeded, 1 if it failed, 2 if it rolled back.
    Deploy {
        /// The app; every app when omitted.
        app: Option<String>,
        /// rolling, stopstart, …; default: the app's deploy_strategy.
        #[arg(long, value_parser = parse_strategy)]
        strategy: Option<Strategy>,
        /// Return once the deployment started.
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        admin: client::AdminArgs,
    },
    /// Send a new config to the running cutover: changed apps are deployed
    /// (or staged with manual_deployments), routes apply at once.
    Push {
        /// The config to send.
        #[arg(default_value = "deploy.yaml")]
        file: PathBuf,
        /// rolling, stopstart, …, for the deployments this push starts.
        #[arg(long, value_parser = parse_strategy)]
        deploy_strategy: Option<Strategy>,
        /// Return once the deployments started.
        #[arg(long)]
        no_wait: bool,
        /// Admin endpoint, e.g. http://127.0.0.1:9180 (default: from FILE).
        #[arg(long, env = "CUTOVER_ADMIN")]
        admin: Option<String>,
    },
    /// Deploy the previous version of an app (or of every app) from the
    /// journal with the app's strategy, followed like deploy (same exit codes).
    Rollback {
        /// The app; every app that has a previous version when omitted.
        app: Option<String>,
        /// Return once the rollback started.
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        admin: client::AdminArgs,
    },
    /// Move the app's running canary past its manual pause.
    Promote {
        app: String,
        /// Through every remaining step, not only past the current pause.
        #[arg(long)]
        full: bool,
        #[command(flatten)]
        admin: client::AdminArgs,
    },
    /// Stop the app's running deployment and return to the previous
    /// version; follows it to its end. Exit 0 once it ended `aborted`.
    Abort {
        app: String,
        #[command(flatten)]
        admin: client::AdminArgs,
    },
    /// Hold the app's new requests (in-flight ones finish) until `resume`.
    Pause {
        app: String,
        /// A request held longer than this gets 503 with Retry-After
        /// (default 60s).
        #[arg(long, value_name = "DURATION")]
        max_pause: Option<String>,
        #[command(flatten)]
        admin: client::AdminArgs,
    },
    /// End a pause: held requests go on.
    Resume {
        app: String,
        #[command(flatten)]
        admin: client::AdminArgs,
    },
    /// Maintenance mode: the app's requests get 503 with a maintenance page
    /// (JSON for Accept: application/json) and Retry-After.
    Maintenance {
        app: String,
        #[arg(value_enum)]
        state: OnOff,
        /// What the maintenance page says.
        #[arg(long)]
        message: Option<String>,
        #[command(flatten)]
        admin: client::AdminArgs,
    },
    /// Past deployments with strategy, outcome and phase timings.
    History {
        /// Only this app's.
        app: Option<String>,
        #[command(flatten)]
        admin: client::AdminArgs,
    },
    /// Certificates in use: hosts, source (file or ACME), issuer, expiry,
    /// renewal state.
    Certs {
        /// Read the certificate files again first (after renewing them in
        /// place); a bad file is refused and the ones in use stay.
        #[arg(long)]
        reload: bool,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: client::AdminArgs,
    },
    /// Show apps, instances and their state.
    Status {
        #[command(flatten)]
        admin: client::AdminArgs,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
        /// Redraw every second until interrupted.
        #[arg(long)]
        watch: bool,
    },
}

/// `on` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OnOff {
    On,
    Off,
}

/// A strategy by the name the API gives it: whatever [`Strategy`] has, no
/// list here to keep in step.
fn parse_strategy(name: &str) -> Result<Strategy, String> {
    serde_json::from_value(serde_json::Value::String(name.to_string())).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { config } => validate(&config),
        Command::Up {
            config,
            access_log,
            takeover_fd,
        } => {
            // Read first: once a package manager replaced the file, the path
            // names the new binary (what SIGUSR2 upgrades to).
            let own_binary = std::env::current_exe().unwrap_or_default();
            let takeover = match takeover_fd.map(upgrade::wire::take_child_fd).transpose() {
                Ok(fd) => fd,
                Err(e) => {
                    eprintln!("cutover: {e:#}");
                    return ExitCode::FAILURE;
                }
            };
            let _flush_on_exit = match logging::init(cli.log_format, &access_log) {
                Ok(guard) => guard,
                Err(e) => {
                    eprintln!("cutover: {e:#}");
                    return ExitCode::FAILURE;
                }
            };
            run_async(up::run(up::Start {
                path: config,
                relaunch: up::relaunch_args(std::env::args_os().skip(1)),
                own_binary,
                takeover,
            }))
        }
        Command::Upgrade { binary, admin } => run_async(commands::upgrade(admin, binary)),
        Command::Status { admin, json, watch } => run_async(commands::status(admin, json, watch)),
        Command::Deploy {
            app,
            strategy,
            no_wait,
            admin,
        } => run_async(commands::deploy(admin, app, strategy, no_wait)),
        Command::Push {
            file,
            deploy_strategy,
            no_wait,
            admin,
        } => {
            let admin = client::AdminArgs::new(admin, file.clone());
            run_async(commands::push(admin, file, deploy_strategy, no_wait))
        }
        Command::Rollback { app, no_wait, admin } => run_async(commands::rollback(admin, app, no_wait)),
        Command::Promote { app, full, admin } => run_async(commands::promote(admin, app, full)),
        Command::Abort { app, admin } => run_async(commands::abort(admin, app)),
        Command::Pause { app, max_pause, admin } => run_async(commands::pause(admin, app, max_pause)),
        Command::Resume { app, admin } => run_async(commands::resume(admin, app)),
        Command::Maintenance {
            app,
            state,
            message,
            admin,
        } => run_async(commands::maintenance(admin, app, state == OnOff::On, message)),
        Command::History { app, admin } => run_async(commands::history(admin, app)),
        Command::Certs { reload, json, admin } => run_async(commands::certs(admin, reload, json)),
    }
}

fn run_async(fut: impl std::future::Future<Output = anyhow::Result<ExitCode>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cutover: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(fut) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cutover: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `cutover validate`: every problem on its own line, exit 1 if any.
fn validate(path: &std::path::Path) -> ExitCode {
    // The certificate files are checked too: they are read at start and on
    // every push, and a bad one is refused like any bad config.
    let loaded = config::load(path).and_then(|config| {
        cutover_control::certs::check_files(&config, &path.display().to_string())
            .map(|warnings| (config, warnings))
            .map_err(ConfigError::Invalid)
    });
    match loaded {
        Ok((config, warnings)) => {
            for warning in warnings {
                eprintln!("{}: warning: {warning}", path.display());
            }
            println!(
                "{}: ok ({} app{}, {} route{})",
                path.display(),
                config.apps.len(),
                if config.apps.len() == 1 { "" } else { "s" },
                config.routes.len(),
                if config.routes.len() == 1 { "" } else { "s" },
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            print_config_error(&e);
            ExitCode::FAILURE
        }
    }
}

/// Prints a config error the way `validate` and `up` both report it.
pub(crate) fn print_config_error(e: &ConfigError) {
    match e {
        ConfigError::Invalid(problems) => {
            for problem in &problems.0 {
                eprintln!("{problem}");
            }
            let n = problems.0.len();
            eprintln!("{n} problem{} found", if n == 1 { "" } else { "s" });
        }
        other => eprintln!("{other}"),
    }
}
