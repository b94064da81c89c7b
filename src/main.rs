//! `autoclat`: the CLI edge. Parses the command line, sets up logging, maps errors to exit
//! codes (0 success, 1 runtime failure, 2 bad usage or bad config).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use autoclat::config::{self, Config, LogFormat};

/// Where `autoclat run` looks for its configuration when `--config` is not given.
const DEFAULT_CONFIG_PATH: &str = "/etc/autoclat/autoclat.toml";

/// Zero-touch 464XLAT for Linux: gives this host IPv4 on IPv6-only uplinks with NAT64.
///
/// `autoclat run` watches the network interfaces; when an uplink is IPv6-only and a NAT64
/// prefix is known (static, PREF64 from router advertisements, or DNS64), it starts a
/// customer-side translator (CLAT, RFC 6877) for it and installs an IPv4 default route through
/// `v4-<uplink>`. When the conditions go away, it removes everything again.
#[derive(Debug, Parser)]
#[command(name = "autoclat", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon in the foreground until SIGTERM/SIGINT (needs root or CAP_NET_ADMIN +
    /// CAP_NET_RAW + CAP_BPF).
    Run {
        /// Configuration file [default: /etc/autoclat/autoclat.toml if present, else the
        /// built-in defaults, identical to config/autoclat.toml].
        #[arg(long, short = 'c', value_name = "PATH")]
        config: Option<PathBuf>,
        /// Watch and decide, but change nothing; log what would be done.
        #[arg(long)]
        dry_run: bool,
    },
    /// Show every uplink the daemon knows: state, reason, prefix, addresses, translator, counters.
    Status {
        /// Print one JSON object ({"uplinks": [...], and "router": {...} in router mode) instead of
        /// one line per uplink.
        #[arg(long, conflicts_with = "prometheus")]
        json: bool,
        /// Print Prometheus metrics (text exposition format 0.0.4), e.g. for node_exporter's
        /// textfile collector.
        #[arg(long)]
        prometheus: bool,
        /// The daemon's control socket [default: daemon.control_socket of the configuration,
        /// /run/autoclat/control.sock].
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
    /// Validate a configuration file and print the effective policy (all defaults filled in).
    CheckConfig {
        /// The file to check.
        path: PathBuf,
    },
    /// Discover the NAT64 prefix of one uplink once (PREF64 from a router advertisement, else
    /// RFC 7050 DNS64) and print it with its source.
    Discover {
        /// The uplink interface, e.g. eth0.
        iface: String,
        /// Ask this DNS server instead of the uplink's (RDNSS, /etc/resolv.conf).
        #[arg(long, value_name = "ADDR")]
        dns: Option<IpAddr>,
        /// Use this configuration (for a static nat64_prefix and discovery.dns_servers).
        #[arg(long, short = 'c', value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// Write the man pages and shell completions into DIR (for packaging).
    #[command(hide = true)]
    GenerateAssets {
        /// Output directory (created): man/*.8 and completions/{autoclat.bash,_autoclat,autoclat.fish}.
        dir: PathBuf,
    },
}

/// A failure with the exit code it maps to.
struct Failure {
    code: u8,
    error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure {
            code: 1,
            error: e.into(),
        }
    }
}

fn usage_error(error: impl Into<anyhow::Error>) -> Failure {
    Failure {
        code: 2,
        error: error.into(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("autoclat: {:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}

fn dispatch(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Run { config, dry_run } => {
            let (config, source) = load_run_config(config.as_deref())?;
            init_logging(config.daemon.log_format);
            tracing::info!("configuration: {source}");
            let clatd_path = clatd_path(&config)?;
            let rt = runtime()?;
            rt.block_on(autoclat::daemon::run(autoclat::daemon::DaemonOptions {
                config,
                dry_run,
                clatd_path,
            }))?;
            Ok(())
        }
        Command::Status {
            json,
            prometheus,
            socket,
        } => {
            let socket = socket.unwrap_or_else(|| {
                // The socket path of the config the daemon most likely runs with.
                load_run_config(None)
                    .map(|(c, _)| PathBuf::from(c.daemon.control_socket))
                    .unwrap_or_else(|_| PathBuf::from(Config::default().daemon.control_socket))
            });
            let rt = runtime()?;
            let report = rt.block_on(autoclat::control::request_status(&socket))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else if prometheus {
                print!("{}", autoclat::metrics::render(&report));
            } else if report.uplinks.is_empty() {
                println!("no interfaces known yet");
            } else {
                for u in &report.uplinks {
                    println!("{}", u.human_line());
                }
            }
            if let (false, false, Some(r)) = (json, prometheus, &report.router) {
                println!("{}", r.human_line());
            }
            Ok(())
        }
        Command::CheckConfig { path } => {
            let config = read_config(&path)?;
            print!("{}", config.effective());
            eprintln!("{}: configuration is valid", path.display());
            Ok(())
        }
        Command::GenerateAssets { dir } => {
            generate_assets(&dir)
                .with_context(|| format!("cannot write assets into {}", dir.display()))?;
            Ok(())
        }
        Command::Discover { iface, dns, config } => {
            init_logging(LogFormat::Text);
            let config = match config {
                Some(p) => read_config(&p)?,
                None => load_run_config(None)?.0,
            };
            let rt = runtime()?;
            let report = rt
                .block_on(autoclat::discovery::discover_once(
                    &iface,
                    dns,
                    &config.discover_options(&iface),
                ))
                .with_context(|| format!("NAT64 prefix discovery on {iface}"))?;
            println!("{report}");
            Ok(())
        }
    }
}

/// The configuration `run` uses: `--config`, else the system file if present, else defaults.
fn load_run_config(path: Option<&Path>) -> Result<(Config, String), Failure> {
    match path {
        Some(p) => Ok((read_config(p)?, p.display().to_string())),
        None if Path::new(DEFAULT_CONFIG_PATH).exists() => Ok((
            read_config(Path::new(DEFAULT_CONFIG_PATH))?,
            DEFAULT_CONFIG_PATH.to_string(),
        )),
        None => Ok((Config::default(), "built-in defaults".to_string())),
    }
}

fn read_config(path: &Path) -> Result<Config, Failure> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {}", path.display()))
        .map_err(usage_error)?;
    config::parse(&text, &path.display().to_string()).map_err(usage_error)
}

/// `daemon.clatd_path`, or the `clatd` installed beside this executable.
fn clatd_path(config: &Config) -> Result<PathBuf, Failure> {
    if !config.daemon.clatd_path.is_empty() {
        return Ok(PathBuf::from(&config.daemon.clatd_path));
    }
    let exe = std::env::current_exe().context("cannot locate the autoclat executable")?;
    Ok(exe.with_file_name("clatd"))
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?)
}

/// Logs go to stderr, without colour escapes unless stderr is a terminal; with the text
/// format under systemd (stderr is the journal stream), natively to journald with one field
/// per event field (`UPLINK=eth0`), falling back to stderr when journald is unreachable.
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    };
    let mut journal_error = None;
    if format == LogFormat::Text && autoclat::journal::journal_stream_is_stderr() {
        match autoclat::journal::JournalLayer::connect(
            Path::new(autoclat::journal::JOURNAL_SOCKET),
            "autoclat",
        ) {
            Ok(layer) => {
                tracing_subscriber::registry()
                    .with(filter())
                    .with(layer)
                    .init();
                return;
            }
            Err(e) => journal_error = Some(e),
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    if let Some(e) = journal_error {
        tracing::warn!("cannot log to journald ({e}); logging to stderr");
    }
}

/// Man pages (section 8) of `autoclat`, its subcommands and `clatd`, and shell completions of
/// `autoclat`, generated from the clap definitions.
fn generate_assets(dir: &Path) -> anyhow::Result<()> {
    use clap::CommandFactory;
    let man = dir.join("man");
    let comp = dir.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&comp)?;
    let render = |cmd: clap::Command, file: &str| -> anyhow::Result<()> {
        let mut buf = Vec::new();
        clap_mangen::Man::new(cmd)
            .section("8")
            .manual("System Administration")
            .source(format!("autoclat {}", env!("CARGO_PKG_VERSION")))
            .render(&mut buf)?;
        std::fs::write(man.join(file), buf)?;
        Ok(())
    };
    let cmd = Cli::command();
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("autoclat-{}", sub.get_name());
        render(sub.clone().name(name.clone()), &format!("{name}.8"))?;
    }
    render(cmd, "autoclat.8")?;
    render(
        autoclat::translator::ClatdArgs::command().version(env!("CARGO_PKG_VERSION")),
        "clatd.8",
    )?;
    for (shell, file) in [
        (clap_complete::Shell::Bash, "autoclat"),
        (clap_complete::Shell::Zsh, "_autoclat"),
        (clap_complete::Shell::Fish, "autoclat.fish"),
    ] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "autoclat", &mut buf);
        std::fs::write(comp.join(file), buf)?;
    }
    Ok(())
}
