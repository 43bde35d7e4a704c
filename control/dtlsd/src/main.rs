//! `dtlsd`: the DTLS relay daemon's command line: `serve` (see `serve.rs`), `certs` and
//! `check-config`; `connect` comes next.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dtlsd::config::merge::ServeFlags;
use dtlsd::config::{Config, LogFormat};
use tracing_subscriber::EnvFilter;

mod serve;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code of `check-config` for an invalid configuration.
const EXIT_INVALID_CONFIG: u8 = 2;

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
    /// plaintext to --backend over its own UDP flow. SIGINT/SIGTERM send close_notify to
    /// every session and exit 0.
    Serve(Box<ServeFlags>),
    /// Write a test PKI: ca.pem, server.pem, server.key (SAN localhost, 127.0.0.1),
    /// client.pem, client.key (ECDSA P-256). For tests and first runs.
    Certs {
        /// Directory to write into (created if missing; existing files are replaced).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Check a TOML config file: parse it, validate every key and load the PEM files it
    /// names. Exit code 0 when valid, 2 when not (one line per problem on stderr).
    CheckConfig {
        /// The config file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    if let Command::Serve(flags) = &mut cli.command {
        // The global flag overrides the config file's `log_format` like any other flag.
        // `serve` starts logging once its configuration (and its log_format) is resolved.
        flags.tuning.log_format = cli.log_format;
    } else {
        init_logging(cli.log_format.unwrap_or_default());
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
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Certs { out } => {
            let files = dtlsd::certs::write_test_pki(&out)?;
            tracing::info!(dir = %out.display(), files = files.len(), "wrote test PKI");
            for f in files {
                println!("{}", f.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { file } => Ok(check_config(&file)),
        Command::Serve(flags) => serve::run(*flags, init_logging),
    }
}

fn check_config(file: &Path) -> ExitCode {
    match dtlsd::check::check_file(file) {
        Ok(config) => {
            let kind = match config {
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
}
