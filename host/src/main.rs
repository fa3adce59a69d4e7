//! The `weir` binary: `weir serve` runs the server; the other subcommands
//! are HTTP clients of a running server (see `weir --help`).

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use weir::cli::{Cli, Command, run_client};
use weir::config::ServeConfig;

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal, not in a log file or pipe.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn serve(config: ServeConfig, repair: bool) -> Result<()> {
    init_tracing(config.log_json);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(weir::api::serve::run(config, repair))?;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve {
            config,
            repair,
            options,
        } => ServeConfig::resolve(*options, config.as_deref())
            .map_err(anyhow::Error::from)
            .and_then(|c| serve(c, repair)),
        command => {
            // A client is a filter like `cat`: when its reader goes away
            // (`weir plugins inspect x | head`), end quietly on SIGPIPE
            // instead of panicking on the failed write. (The server keeps
            // Rust's default of ignoring it: a client hanging up a socket
            // must not kill it.)
            // SAFETY: signal(2) before any other thread exists; SIG_DFL is
            // a valid disposition for SIGPIPE.
            unsafe {
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            }
            run_client(&cli.client, command)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weir: {e:#}");
            ExitCode::FAILURE
        }
    }
}
