//! `weir topics`: list, create, inspect, delete.

use anyhow::Result;
use clap::Subcommand;
use serde_json::json;

use super::answers::typed;
use super::client::{Client, encode_path, ok};
use super::output::{print_json, print_topic, print_topics};

#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// List topics
    List,
    /// Create a topic
    Create {
        name: String,
        #[arg(long, short, default_value_t = 1)]
        partitions: u32,
        #[arg(long)]
        retention_ms: Option<u64>,
        #[arg(long)]
        retention_bytes: Option<u64>,
        #[arg(long)]
        compact: bool,
    },
    /// Show a topic's partitions and offsets
    Inspect { name: String },
    /// Delete a topic and its data
    Delete { name: String },
}

pub fn run(client: &Client, json_out: bool, cmd: TopicsCommand) -> Result<()> {
    let answer = match &cmd {
        TopicsCommand::List => ok(client.get("/topics")?)?,
        TopicsCommand::Create {
            name,
            partitions,
            retention_ms,
            retention_bytes,
            compact,
        } => {
            let mut body = json!({"name": name, "partitions": partitions, "compact": compact});
            if let Some(r) = retention_ms {
                body["retention_ms"] = json!(r);
            }
            if let Some(r) = retention_bytes {
                body["retention_bytes"] = json!(r);
            }
            ok(client.post_json("/topics", &body)?)?
        }
        TopicsCommand::Inspect { name } => {
            ok(client.get(&format!("/topics/{}", encode_path(name)))?)?
        }
        TopicsCommand::Delete { name } => {
            ok(client.delete(&format!("/topics/{}", encode_path(name)))?)?
        }
    };
    if json_out {
        print_json(&answer);
        return Ok(());
    }
    match cmd {
        TopicsCommand::List => print_topics(&typed(&answer)?),
        TopicsCommand::Create {
            name, partitions, ..
        } => println!("created topic {name} with {partitions} partition(s)"),
        TopicsCommand::Inspect { .. } => print_topic(&typed(&answer)?),
        TopicsCommand::Delete { name } => println!("deleted topic {name}"),
    }
    Ok(())
}
