//! `weir status`: health, topics and plugins at a glance.

use anyhow::Result;
use serde_json::json;

use super::answers::{Health, Plugins, Topics, typed};
use super::client::{Client, ok};
use super::output::{print_json, print_plugins, print_topics};

/// Print the server's health, topics and plugins.
pub fn run(client: &Client, json_out: bool) -> Result<()> {
    let health = ok(client.get("/healthz")?)?;
    let topics = ok(client.get("/topics")?)?;
    let plugins = ok(client.get("/plugins")?);
    if json_out {
        let plugins = plugins.unwrap_or_else(|e| json!({"error": e.to_string()}));
        print_json(
            &json!({"health": health, "topics": topics["topics"], "plugins": plugins["plugins"]}),
        );
        return Ok(());
    }
    let health: Health = typed(&health)?;
    println!(
        "server {} — {} (weir {}, up {}s)",
        client.base, health.status, health.version, health.uptime_seconds
    );
    print_topics(&typed::<Topics>(&topics)?);
    match plugins.and_then(|p| typed::<Plugins>(&p)) {
        Ok(p) => print_plugins(&p),
        Err(e) => println!("plugins: {e}"),
    }
    Ok(())
}
