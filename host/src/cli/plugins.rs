//! `weir plugins`: list, inspect, pause / resume, reset, rollback, rebuild, delete.

use anyhow::{Result, bail};
use clap::Subcommand;
use serde_json::json;

use super::answers::typed;
use super::client::{Client, encode_path, ok};
use super::output::{print_json, print_plugin, print_plugins};

#[derive(Debug, Subcommand)]
pub enum PluginsCommand {
    /// List plugins
    List,
    /// Versions, per-partition offsets and lag, errors
    Inspect {
        name: String,
    },
    Pause {
        name: String,
    },
    Resume {
        name: String,
    },
    /// Move the input position
    Reset {
        name: String,
        #[arg(long, group = "target")]
        beginning: bool,
        #[arg(long, group = "target")]
        end: bool,
        #[arg(long, group = "target")]
        offset: Option<u64>,
        #[arg(long, group = "target")]
        timestamp: Option<i64>,
        /// Ponds: keep the state (default: empty it, then fold from the new position)
        #[arg(long)]
        keep_state: bool,
    },
    /// Make an earlier version active (default: the previous one)
    Rollback {
        name: String,
        #[arg(long)]
        version: Option<u32>,
    },
    /// Rebuild a pond from offset 0 (reads switch once it caught up)
    Rebuild {
        name: String,
    },
    Delete {
        name: String,
    },
}

pub fn run(client: &Client, json_out: bool, cmd: PluginsCommand) -> Result<()> {
    let path = |name: &str, action: &str| format!("/plugins/{}{action}", encode_path(name));
    let answer = match &cmd {
        PluginsCommand::List => ok(client.get("/plugins")?)?,
        PluginsCommand::Inspect { name } => ok(client.get(&path(name, ""))?)?,
        PluginsCommand::Pause { name } => ok(client.post_json(&path(name, "/pause"), &json!({}))?)?,
        PluginsCommand::Resume { name } => {
            ok(client.post_json(&path(name, "/resume"), &json!({}))?)?
        }
        PluginsCommand::Reset {
            name,
            beginning,
            end,
            offset,
            timestamp,
            keep_state,
        } => {
            let mut body = match (beginning, end, offset, timestamp) {
                (true, _, _, _) => json!({"to": "beginning"}),
                (_, true, _, _) => json!({"to": "end"}),
                (_, _, Some(o), _) => json!({"offset": o}),
                (_, _, _, Some(t)) => json!({"timestamp": t}),
                _ => bail!("reset needs one of --beginning, --end, --offset N, --timestamp MS"),
            };
            if *keep_state {
                body["keep_state"] = json!(true);
            }
            ok(client.post_json(&path(name, "/reset"), &body)?)?
        }
        PluginsCommand::Rollback { name, version } => {
            let body = version.map_or(json!({}), |v| json!({"version": v}));
            ok(client.post_json(&path(name, "/rollback"), &body)?)?
        }
        PluginsCommand::Rebuild { name } => {
            ok(client.post_json(&path(name, "/rebuild"), &json!({}))?)?
        }
        PluginsCommand::Delete { name } => ok(client.delete(&path(name, ""))?)?,
    };
    if json_out {
        print_json(&answer);
        return Ok(());
    }
    match cmd {
        PluginsCommand::List => print_plugins(&typed(&answer)?),
        PluginsCommand::Delete { name } => println!("deleted plugin {name}"),
        _ => print_plugin(&typed(&answer)?),
    }
    Ok(())
}
