//! `weir pond`: read a pond by key, by prefix, or through its own query.

use anyhow::Result;
use clap::Subcommand;

use super::answers::{Entries, typed};
use super::client::{Client, encode_path, ok};
use super::output::{print_json, shown};

#[derive(Debug, Subcommand)]
pub enum PondCommand {
    /// One key
    Get { pond: String, key: String },
    /// Keys by prefix
    Scan {
        pond: String,
        #[arg(long, default_value = "")]
        prefix: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// The pond plugin's own query (REQUEST is sent as-is)
    Query { pond: String, request: String },
}

/// Read the pond and print what came back.
pub fn run(client: &Client, json_out: bool, cmd: PondCommand) -> Result<()> {
    let answer = match &cmd {
        PondCommand::Get { pond, key } => ok(client.get(&format!(
            "/ponds/{}/keys/{}",
            encode_path(pond),
            encode_path(key)
        ))?)?,
        PondCommand::Scan {
            pond,
            prefix,
            limit,
        } => ok(client.get(&format!(
            "/ponds/{}/keys?prefix={}&limit={limit}",
            encode_path(pond),
            encode_path(prefix)
        ))?)?,
        PondCommand::Query { pond, request } => ok(client.send(
            "POST",
            &format!("/ponds/{}/query", encode_path(pond)),
            "application/json",
            &[],
            request.as_bytes(),
        )?)?,
    };
    if json_out {
        print_json(&answer);
    } else {
        match cmd {
            PondCommand::Get { key, .. } => println!("{key} = {}", shown(&answer, "value")),
            PondCommand::Scan { .. } => {
                for e in &typed::<Entries>(&answer)?.entries {
                    println!("{} = {}", shown(e, "key"), shown(e, "value"));
                }
            }
            PondCommand::Query { .. } => print_json(&answer),
        }
    }
    Ok(())
}
