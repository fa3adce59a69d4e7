//! `weir deploy`: a manifest (a JSON file or inline JSON) and a component.

use std::path::PathBuf;

use anyhow::{Context, Result};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use clap::Args;
use serde_json::{Value, json};

use super::answers::{Plugin, typed};
use super::client::{Client, ok};
use super::output::print_json;

#[derive(Debug, Args)]
pub struct DeployArgs {
    pub manifest: String,
    pub component: PathBuf,
}

/// Deploy the component with the manifest and print the new version.
pub fn run(client: &Client, json_out: bool, args: DeployArgs) -> Result<()> {
    let DeployArgs {
        manifest,
        component,
    } = args;
    let manifest_text = if manifest.trim_start().starts_with('{') {
        manifest.clone()
    } else {
        std::fs::read_to_string(&manifest).with_context(|| format!("reading {manifest}"))?
    };
    let manifest_json: Value = serde_json::from_str(&manifest_text)
        .with_context(|| format!("the manifest {manifest} is not JSON"))?;
    let wasm =
        std::fs::read(&component).with_context(|| format!("reading {}", component.display()))?;
    let body = json!({"manifest": manifest_json, "component_base64": B64.encode(&wasm)});
    let answer = ok(client.post_json("/plugins", &body)?)?;
    if json_out {
        print_json(&answer);
    } else {
        let p: Plugin = typed(&answer)?;
        println!(
            "deployed {} version {} ({})",
            p.name, p.active_version, p.kind
        );
    }
    Ok(())
}
