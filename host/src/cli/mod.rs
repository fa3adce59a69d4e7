//! The `weir` command line: `weir serve` runs the server; every other
//! subcommand is a client of a running server's HTTP API (`--server`,
//! `WEIR_SERVER`), printing human-readable text, or the server's JSON with
//! `--json`. Errors print the server's code and message and exit non-zero.

//!
//! One module per subcommand (`status`, `topics`, `produce`, `tail`,
//! `deploy`, `plugins`, `pond`, `command`); `client` is the HTTP client they
//! share, `answers` the server's answers as typed structs, and `output` how
//! they are shown.

mod answers;
mod client;
mod command;
mod deploy;
mod output;
mod plugins;
mod pond;
mod produce;
mod status;
mod tail;
mod topics;

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, Parser, Subcommand};

use crate::config::ServeOptions;

pub use client::{Answer, Client};
pub use command::CommandArgs;
pub use deploy::DeployArgs;
pub use plugins::PluginsCommand;
pub use pond::PondCommand;
pub use produce::ProduceArgs;
pub use tail::TailArgs;
pub use topics::TopicsCommand;

/// The client options, in the help of the client subcommands only (they
/// are accepted anywhere on the line, but mean nothing to `weir serve`).
const CLIENT_OPTIONS_HELP: &str = "\
Client options (before or after the subcommand):
      --server <SERVER>  Server base URL [env: WEIR_SERVER] [default: http://127.0.0.1:8080]
      --token <TOKEN>    Bearer token for admin routes [env: WEIR_TOKEN]
      --json             Print the server's JSON instead of text";

#[derive(Debug, Parser)]
#[command(
    name = "weir",
    version,
    about = "An event log that runs stream processors as sandboxed WebAssembly components",
    after_help = CLIENT_OPTIONS_HELP
)]
pub struct Cli {
    #[command(flatten)]
    pub client: ClientOptions,
    #[command(subcommand)]
    pub command: Command,
}

/// How client subcommands reach the server.
#[derive(Debug, Clone, Args)]
pub struct ClientOptions {
    /// Server base URL
    #[arg(
        long,
        global = true,
        hide = true,
        env = "WEIR_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    pub server: String,
    /// Bearer token for admin routes
    #[arg(
        long,
        global = true,
        hide = true,
        env = "WEIR_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// Print the server's JSON instead of text
    #[arg(long, global = true, hide = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server
    Serve {
        /// TOML configuration file (flags and WEIR_* variables override it)
        #[arg(long, env = "WEIR_CONFIG", hide_env_values = true)]
        config: Option<PathBuf>,
        /// Truncate the log at the first corruption instead of refusing to start
        #[arg(long)]
        repair: bool,
        #[command(flatten)]
        options: Box<ServeOptions>,
    },
    /// Server health, topics and plugins at a glance
    #[command(after_help = CLIENT_OPTIONS_HELP)]
    Status,
    /// Manage topics
    #[command(after_help = CLIENT_OPTIONS_HELP)]
    #[command(subcommand)]
    Topics(TopicsCommand),
    /// Append records to a topic (one VALUE, or one record per stdin line)
    #[command(after_help = CLIENT_OPTIONS_HELP)]
    Produce(ProduceArgs),
    /// Print a topic's records (and keep following with -f)
    #[command(after_help = CLIENT_OPTIONS_HELP)]
    Tail(TailArgs),
    /// Deploy a plugin version: a manifest (a JSON file, or inline JSON) and a component (.wasm)
    #[command(after_help = CLIENT_OPTIONS_HELP)]
    Deploy(DeployArgs),
    /// Manage plugins
    #[command(after_help = CLIENT_OPTIONS_HELP)]
    #[command(subcommand)]
    Plugins(PluginsCommand),
    /// Read a pond
    #[command(after_help = CLIENT_OPTIONS_HELP)]
    #[command(subcommand)]
    Pond(PondCommand),
    /// Send a command to a service
    #[command(after_help = CLIENT_OPTIONS_HELP)]
    Command(CommandArgs),
}

/// Run a client subcommand (everything but `serve`).
pub fn run_client(options: &ClientOptions, command: Command) -> Result<()> {
    let client = Client::new(options);
    let json_out = options.json;
    match command {
        Command::Serve { .. } => bail!("serve is not a client command"),
        Command::Status => status::run(&client, json_out),
        Command::Topics(cmd) => topics::run(&client, json_out, cmd),
        Command::Produce(args) => produce::run(&client, json_out, args),
        Command::Tail(args) => tail::run(&client, json_out, args),
        Command::Deploy(args) => deploy::run(&client, json_out, args),
        Command::Plugins(cmd) => plugins::run(&client, json_out, cmd),
        Command::Pond(cmd) => pond::run(&client, json_out, cmd),
        Command::Command(args) => command::run(&client, json_out, args),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::client::{encode_path, ok};
    use super::output::shown;
    use super::produce::value_field;
    use super::*;

    #[test]
    fn parses_commands() {
        let cli = Cli::try_parse_from([
            "weir",
            "--json",
            "produce",
            "orders",
            "{\"a\":1}",
            "-k",
            "k1",
            "-H",
            "x=y",
        ])
        .unwrap();
        assert!(cli.client.json);
        assert!(
            matches!(cli.command, Command::Produce(ref p) if p.topic == "orders" && p.key.as_deref() == Some("k1"))
        );
        let cli = Cli::try_parse_from([
            "weir",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            "/tmp/x",
        ])
        .unwrap();
        assert!(
            matches!(cli.command, Command::Serve { ref options, .. } if options.listen.is_some())
        );
        assert!(
            Cli::try_parse_from(["weir", "plugins", "reset", "p", "--beginning", "--end"]).is_err()
        );
        assert!(Cli::try_parse_from(["weir", "topics", "create", "t", "-p", "3"]).is_ok());
    }

    #[test]
    fn helpers() {
        assert_eq!(encode_path("a b/c"), "a%20b%2Fc");
        assert_eq!(value_field("{\"a\":1}", false, false).unwrap().0, "value");
        assert_eq!(value_field("hello", false, false).unwrap().0, "value_text");
        assert!(value_field("hello", true, false).is_err());
        assert_eq!(value_field("1", false, true).unwrap().0, "value_text");
        let r = json!({"offset": 1, "key": null, "value_text": "hi", "headers": []});
        assert_eq!(shown(&r, "value"), "hi");
        assert_eq!(
            shown(&json!({"value_base64": "AA=="}), "value"),
            "base64:AA=="
        );
        let answer = Answer {
            status: 404,
            body: json!({"error": {"code": "unknown_topic", "message": "no topic"}}),
        };
        assert_eq!(
            ok(answer).unwrap_err().to_string(),
            "unknown_topic (404): no topic"
        );
    }
}
