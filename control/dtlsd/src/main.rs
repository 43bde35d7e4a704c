//! `dtlsd`: the DTLS relay daemon's command line: `serve`, `connect`, `certs` and
//! `check-config`, logging, and signals (SIGINT/SIGTERM drain, SIGHUP reload). The daemon
//! itself is the `dtlsd` library.

use std::cell::Cell;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use dtlsd::config::merge::{ConnectFlags, ServeFlags};
use dtlsd::config::{Config, ConfigErrors, LogFormat};
use dtlsd::connect::Client;
use dtlsd::daemon::Daemon;
use dtlsd::lifecycle::{self, ServiceManager};
use dtlsd::serve::{Options, Server};
use tracing_subscriber::EnvFilter;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code of `check-config`, `serve` and `connect` for an invalid configuration.
const EXIT_INVALID_CONFIG: u8 = 2;
/// How often the main thread looks at the signal flags and the threads' health.
const MAIN_POLL: Duration = Duration::from_millis(20);

/// DTLS 1.2 relay daemon.
#[derive(Debug, Parser)]
#[command(name = "dtlsd", version, about, long_about = None)]
struct Cli {
    /// Log format, human or json (logs go to stderr; RUST_LOG sets the filter, default
    /// `info`) [default: human, or the config file's log_format].
    #[arg(long, value_enum, global = true, value_name = "FORMAT")]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Terminate DTLS from any number of clients on --listen and relay each session's
    /// plaintext to --backend over its own UDP flow. SIGHUP re-reads --config and applies
    /// certificates, keys, client CA and PSKs (sessions of a removed PSK, or whose client
    /// certificate the new CA rejects, are closed); SIGINT/SIGTERM drain for --drain-timeout
    /// (new handshakes refused), then send close_notify to every session and exit 0.
    Serve(Box<ServeFlags>),
    /// Accept plaintext UDP on --listen and carry each local source's datagrams over its own
    /// DTLS session to --server; replies come back to that source. SIGHUP re-reads --config
    /// and applies the server trust (CA or PSK), certificate and key to new handshakes;
    /// SIGINT/SIGTERM drain for --drain-timeout, then send close_notify on every session and
    /// exit 0.
    Connect(Box<ConnectFlags>),
    /// Write a test PKI: ca.pem, server.pem, server.key (SAN localhost, 127.0.0.1),
    /// client.pem, client.key (ECDSA P-256). For tests and first runs.
    Certs {
        /// Directory to write into (created if missing; existing files are replaced).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Give the key files to this group with mode 0640 (e.g. `dtlsd`, the service's
        /// group) instead of mode 0600 for the invoking user only.
        #[arg(long, value_name = "NAME")]
        group: Option<String>,
    },
    /// Write the dtlsd(1) manual page (roff, from this command line's own help) to stdout;
    /// the Debian package ships it.
    #[command(hide = true)]
    Manpage,
    /// Check a TOML config file: parse it, validate every key and load the PEM files it
    /// names. Exit code 0 when valid, 2 when not (one line per problem on stderr).
    CheckConfig {
        /// The config file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Show a running daemon's sessions through its admin socket: peer, shard, version,
    /// suite, identity, connection ID, uptime, idle time, records and bytes each way.
    Status {
        /// The daemon's admin socket [default: the only socket in /run/dtlsd].
        #[arg(long, value_name = "PATH")]
        admin_socket: Option<PathBuf>,
        /// Print the daemon's JSON answer instead of a table.
        #[arg(long)]
        json: bool,
        /// Only sessions of this peer (IP, or IP:PORT).
        #[arg(long, value_name = "PEER")]
        peer: Option<String>,
        /// Only sessions whose identity contains this text (e.g. `CN=client`, `psk:alice`).
        #[arg(long, value_name = "TEXT")]
        identity: Option<String>,
    },
    /// Close sessions of a running daemon with close_notify: TARGET is a session id (from
    /// `dtlsd status`), a peer IP:PORT, or a peer IP (all its sessions). Exit code 1 when
    /// none matched.
    Kick {
        /// The daemon's admin socket [default: the only socket in /run/dtlsd].
        #[arg(long, value_name = "PATH")]
        admin_socket: Option<PathBuf>,
        /// Session id, IP:PORT or IP.
        #[arg(value_name = "TARGET")]
        target: String,
    },
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    // The global flag overrides the config file's `log_format` like any other flag.
    // `serve` and `connect` start logging once their configuration is resolved.
    match &mut cli.command {
        Command::Serve(flags) => flags.tuning.log_format = cli.log_format,
        Command::Connect(flags) => flags.tuning.log_format = cli.log_format,
        _ => init_logging(cli.log_format.unwrap_or_default()),
    }
    match run(cli.command) {
        Ok(code) => code,
        Err(err) => {
            // One line. The crate's errors already carry their causes in their message, so
            // the outermost error is printed alone (`{:#}` would repeat the causes).
            eprintln!("dtlsd: error: {}", err.to_string().replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(use_colour(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        ))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// ANSI colours only on a terminal, and never when `NO_COLOR` is set to anything non-empty
/// (<https://no-color.org>): logs written to a file, a pipe or journald stay plain.
fn use_colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(std::ffi::OsStr::is_empty)
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Certs { out, group } => {
            let files = dtlsd::certs::write_test_pki(&out, group.as_deref())?;
            tracing::info!(dir = %out.display(), files = files.len(), "wrote test PKI");
            for f in files {
                println!("{}", f.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { file } => Ok(check_config(&file)),
        Command::Manpage => {
            use clap::CommandFactory as _;
            let mut page = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut page)
                .context("rendering the manual page")?;
            // One section per command: its description, then its options.
            for sub in Cli::command()
                .get_subcommands()
                .filter(|s| !s.is_hide_set())
            {
                let about = sub.get_long_about().or(sub.get_about());
                let text = about.map(ToString::to_string).unwrap_or_default();
                page.extend(format!(".SH \"DTLSD {}\"\n", sub.get_name().to_uppercase()).bytes());
                page.extend(format!("{}\n", text.replace('\n', " ")).bytes());
                clap_mangen::Man::new(sub.clone())
                    .render_options_section(&mut page)
                    .context("rendering the manual page")?;
            }
            std::io::Write::write_all(&mut std::io::stdout(), &page)
                .context("writing the manual page")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status {
            admin_socket,
            json,
            peer,
            identity,
        } => {
            let socket = dtlsd::admin::resolve_socket(admin_socket.as_deref())?;
            let answer = dtlsd::admin::request(&socket, "status")?;
            let filter = dtlsd::admin::Filter { peer, identity };
            let rows = dtlsd::admin::filtered(&answer, &filter);
            if json {
                let out = serde_json::json!({
                    "daemon": answer["daemon"],
                    "sessions": rows,
                    "shards_unanswered": answer["shards_unanswered"],
                });
                println!("{out}");
            } else {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let connect = answer["daemon"]["mode"] == "connect";
                print!("{}", dtlsd::admin::header(&answer["daemon"]));
                print!("{}", dtlsd::admin::table(&rows, now, connect));
            }
            if let Some(late) = answer["shards_unanswered"].as_array()
                && !late.is_empty()
            {
                eprintln!(
                    "dtlsd: warning: shards {late:?} did not answer; their sessions show no traffic"
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Kick {
            admin_socket,
            target,
        } => {
            if dtlsd::admin::parse_target(&target).is_none() {
                anyhow::bail!("`{target}` is not a session id, IP:PORT or IP");
            }
            let socket = dtlsd::admin::resolve_socket(admin_socket.as_deref())?;
            let answer = dtlsd::admin::request(&socket, &format!("kick {target}"))?;
            let kicked = answer["kicked"].as_array().cloned().unwrap_or_default();
            if kicked.is_empty() {
                eprintln!("dtlsd: no session matches {target}");
                return Ok(ExitCode::FAILURE);
            }
            let ids: Vec<String> = kicked.iter().map(ToString::to_string).collect();
            println!("closed session(s) {}", ids.join(", "));
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(flags) => {
            let config = match flags.resolve().and_then(dtlsd::check::serve_files) {
                Ok(config) => config,
                Err(errors) => return Ok(invalid_config(&errors)),
            };
            init_logging(config.tuning.log_format);
            let signals = Signals::install()?;
            let mut manager = ServiceManager::from_env();
            let drain_timeout = Cell::new(config.tuning.drain_timeout);
            let run_as = config.tuning.run_as.clone();
            if let Some(run_as) = &run_as {
                dtlsd::privileges::check_root(run_as)?;
            }
            dtlsd::activation::receive(&config.listen)?;
            let server = Server::start(config, Options::default())?;
            // Sockets bound, files read, admin socket made: root is no longer needed.
            if let Some(run_as) = &run_as {
                dtlsd::privileges::drop_to(run_as)?;
            }
            let listen: Vec<String> = server
                .local_addrs()
                .iter()
                .map(ToString::to_string)
                .collect();
            manager.ready(&format!("serving on {}", listen.join(",")));
            // SIGHUP re-reads the configuration file (and the files it names) with the
            // same flags on top, as at start.
            let reload = || match flags.resolve() {
                Ok(config) => {
                    let window = config.tuning.drain_timeout;
                    server
                        .reload(config)
                        .inspect(|()| drain_timeout.set(window))
                }
                Err(errors) => {
                    server.count_reload_failure();
                    Err(anyhow::anyhow!(
                        "{}",
                        errors.to_string().replace('\n', "; ")
                    ))
                }
            };
            let outcome = signals.wait(&mut manager, || server.failed(), reload);
            signals.drain(&mut manager, outcome, &server, drain_timeout.get());
            finish(outcome, server.shutdown())
        }
        Command::Connect(flags) => {
            let config = match flags.resolve().and_then(dtlsd::check::connect_files) {
                Ok(config) => config,
                Err(errors) => return Ok(invalid_config(&errors)),
            };
            init_logging(config.tuning.log_format);
            let signals = Signals::install()?;
            let mut manager = ServiceManager::from_env();
            let drain_timeout = Cell::new(config.tuning.drain_timeout);
            let run_as = config.tuning.run_as.clone();
            if let Some(run_as) = &run_as {
                dtlsd::privileges::check_root(run_as)?;
            }
            dtlsd::activation::receive(&[config.listen])?;
            let client = Client::start(config)?;
            if let Some(run_as) = &run_as {
                dtlsd::privileges::drop_to(run_as)?;
            }
            manager.ready(&format!("accepting plaintext on {}", client.local_addr()));
            let reload = || match flags.resolve() {
                Ok(config) => {
                    let window = config.tuning.drain_timeout;
                    client
                        .reload(config)
                        .inspect(|()| drain_timeout.set(window))
                }
                Err(errors) => {
                    client.count_reload_failure();
                    Err(anyhow::anyhow!(
                        "{}",
                        errors.to_string().replace('\n', "; ")
                    ))
                }
            };
            let outcome = signals.wait(&mut manager, || client.failed(), reload);
            signals.drain(&mut manager, outcome, &client, drain_timeout.get());
            finish(outcome, client.shutdown())
        }
    }
}

/// One line per problem, each naming its key; exit 2 like `check-config`.
fn invalid_config(errors: &ConfigErrors) -> ExitCode {
    for e in &errors.0 {
        eprintln!("dtlsd: error: {}", e.to_string().replace('\n', " "));
    }
    ExitCode::from(EXIT_INVALID_CONFIG)
}

/// Why the main loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// SIGINT or SIGTERM.
    Signalled,
    /// A worker thread stopped on its own.
    WorkerFailed,
}

/// The flags the signal handlers set.
struct Signals {
    term: Arc<AtomicBool>,
    hup: Arc<AtomicBool>,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        let term = Arc::new(AtomicBool::new(false));
        let hup = Arc::new(AtomicBool::new(false));
        for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
            signal_hook::flag::register(signal, Arc::clone(&term))
                .context("installing signal handlers")?;
        }
        signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hup))
            .context("installing signal handlers")?;
        Ok(Self { term, hup })
    }

    /// Waits for SIGINT/SIGTERM or a failed worker; reloads on each SIGHUP (a failed reload
    /// is logged and the old configuration stays); keeps the service manager informed.
    fn wait(
        &self,
        manager: &mut ServiceManager,
        failed: impl Fn() -> bool,
        reload: impl Fn() -> anyhow::Result<()>,
    ) -> Outcome {
        while !self.term.load(Relaxed) {
            if failed() {
                tracing::error!("a worker thread stopped unexpectedly; shutting down");
                manager.stopping("a worker thread stopped unexpectedly");
                return Outcome::WorkerFailed;
            }
            manager.tick(Instant::now(), true);
            if self.hup.swap(false, Relaxed) {
                manager.reloading();
                match reload() {
                    Ok(()) => {
                        tracing::info!("SIGHUP: configuration reloaded");
                        manager.ready("configuration reloaded");
                    }
                    Err(e) => {
                        tracing::error!(
                            error = %format!("{e:#}"),
                            "SIGHUP: reload failed; keeping the previous configuration"
                        );
                        manager.ready("reload failed; previous configuration kept");
                    }
                }
            }
            std::thread::sleep(MAIN_POLL);
        }
        manager.stopping("shutting down");
        Outcome::Signalled
    }

    /// After a signal: the drain window (if any), during which a second SIGINT/SIGTERM ends
    /// it at once; then every session left is closed by the shutdown.
    fn drain(
        &self,
        manager: &mut ServiceManager,
        outcome: Outcome,
        daemon: &Daemon,
        window: Duration,
    ) {
        if outcome == Outcome::Signalled {
            self.term.store(false, Relaxed);
            let failed = || daemon.failed();
            lifecycle::drain(daemon, window, &self.term, MAIN_POLL, |now| {
                manager.tick(now, !failed());
            });
        }
        tracing::info!("shutting down: closing every session");
    }
}

fn finish(outcome: Outcome, shutdown: anyhow::Result<()>) -> anyhow::Result<ExitCode> {
    if let Err(e) = shutdown {
        tracing::error!(error = %e, "shutdown");
        return Ok(ExitCode::FAILURE);
    }
    Ok(match outcome {
        Outcome::Signalled => ExitCode::SUCCESS,
        Outcome::WorkerFailed => ExitCode::FAILURE,
    })
}

fn check_config(file: &Path) -> ExitCode {
    match dtlsd::check::check_file(file) {
        Ok(checked) => {
            for w in &checked.warnings {
                eprintln!(
                    "{}: warning: {}",
                    file.display(),
                    w.to_string().replace('\n', " ")
                );
            }
            let kind = match checked.config {
                Config::Serve(_) => "serve",
                Config::Connect(_) => "connect",
            };
            println!("{}: ok ({kind} config)", file.display());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{}: {}", file.display(), e.to_string().replace('\n', " "));
            }
            ExitCode::from(EXIT_INVALID_CONFIG)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(super::use_colour(true, None));
        assert!(super::use_colour(true, Some(OsStr::new(""))));
        assert!(!super::use_colour(true, Some(OsStr::new("1"))));
        assert!(!super::use_colour(false, None));
    }
}
