//! The `weir` command line: `weir serve` runs the server; every other
//! subcommand is a client of a running server's HTTP API (`--server`,
//! `WEIR_SERVER`), printing human-readable text, or the server's JSON with
//! `--json`. Errors print the server's code and message and exit non-zero.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};

use crate::config::ServeOptions;

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
        options: ServeOptions,
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
    Produce {
        topic: String,
        /// The value; without it, each line of stdin is one record
        value: Option<String>,
        #[arg(long, short)]
        key: Option<String>,
        #[arg(long, short)]
        partition: Option<u32>,
        /// name=value, repeatable
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
        /// Treat values as JSON (default: JSON if they parse, else text)
        #[arg(long, conflicts_with = "text")]
        json_value: bool,
        /// Treat values as plain text
        #[arg(long)]
        text: bool,
        /// A retried produce with the same key appends once
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Print a topic's records (and keep following with -f)
    #[command(after_help = CLIENT_OPTIONS_HELP)]
    Tail {
        topic: String,
        #[arg(long, short)]
        partition: Option<u32>,
        /// earliest | latest | an offset (with --partition)
        #[arg(long, default_value = "earliest")]
        from: String,
        /// Keep printing new records until interrupted
        #[arg(long, short)]
        follow: bool,
        /// Stop after this many records
        #[arg(long, short = 'n')]
        limit: Option<usize>,
    },
    /// Deploy a plugin version: a manifest (a JSON file, or inline JSON) and a component (.wasm)
    #[command(after_help = CLIENT_OPTIONS_HELP)]
    Deploy {
        manifest: String,
        component: PathBuf,
    },
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
    Command {
        service: String,
        aggregate: String,
        /// The command's type, e.g. deposit
        name: String,
        /// The command's data, JSON
        data: Option<String>,
        /// Answer once durable instead of waiting for the result
        #[arg(long)]
        no_wait: bool,
        #[arg(long)]
        expected_version: Option<u64>,
        /// Command id (tracking id); generated by the server when absent
        #[arg(long)]
        id: Option<String>,
    },
}

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

/// A small blocking HTTP client for the server's API.
pub struct Client {
    agent: ureq::Agent,
    base: String,
    token: Option<String>,
}

/// A server answer: status and JSON body (or the raw text as a JSON string).
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

fn encode_path(segment: &str) -> String {
    let mut out = String::new();
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    pub fn new(options: &ClientOptions) -> Client {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)))
            .build()
            .into();
        Client {
            agent,
            base: options.server.trim_end_matches('/').to_owned(),
            token: options.token.clone(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn finish(
        &self,
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Answer> {
        let mut resp =
            result.with_context(|| format!("cannot reach the weir server at {}", self.base))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(256 << 20)
            .read_to_string()
            .context("reading the server's answer")?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(Answer { status, body })
    }

    pub fn get(&self, path: &str) -> Result<Answer> {
        let mut req = self.agent.get(self.url(path));
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        self.finish(req.call())
    }

    pub fn delete(&self, path: &str) -> Result<Answer> {
        let mut req = self.agent.delete(self.url(path));
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        self.finish(req.call())
    }

    pub fn send(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Answer> {
        let mut req = match method {
            "PUT" => self.agent.put(self.url(path)),
            _ => self.agent.post(self.url(path)),
        };
        req = req.header("content-type", content_type);
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.finish(req.send(body))
    }

    pub fn post_json(&self, path: &str, body: &Value) -> Result<Answer> {
        self.send(
            "POST",
            path,
            "application/json",
            &[],
            body.to_string().as_bytes(),
        )
    }
}

/// Fail with the server's error code and message on a non-2xx answer.
fn ok(answer: Answer) -> Result<Value> {
    if (200..300).contains(&answer.status) {
        return Ok(answer.body);
    }
    let error = &answer.body["error"];
    let code = error["code"].as_str().unwrap_or("error");
    let message = error["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| answer.body.to_string());
    match error["reason"].as_str() {
        Some(reason) => bail!("{code} ({}): {reason}: {message}", answer.status),
        None => bail!("{code} ({}): {message}", answer.status),
    }
}

fn print_json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

/// The readable form of a field given as `field` (JSON, or text for keys
/// and headers), `field_text` or `field_base64`.
fn shown(record: &Value, field: &str) -> String {
    shown_as(record, field, field == "key")
}

fn shown_as(record: &Value, field: &str, text: bool) -> String {
    if let Some(v) = record.get(field) {
        return match v {
            Value::String(s) if text => s.clone(),
            other => other.to_string(),
        };
    }
    if let Some(Value::String(t)) = record.get(format!("{field}_text")) {
        return t.clone();
    }
    if let Some(Value::String(b)) = record.get(format!("{field}_base64")) {
        return format!("base64:{b}");
    }
    String::new()
}

fn print_record(partition: u64, r: &Value) {
    let key = if r["key"].is_null() && r.get("key_base64").is_none() {
        "-".to_owned()
    } else {
        shown(r, "key")
    };
    let headers: Vec<String> = r["headers"]
        .as_array()
        .map(|hs| {
            hs.iter()
                .map(|h| {
                    format!(
                        "{}={}",
                        h["name"].as_str().unwrap_or(""),
                        shown_as(h, "value", true)
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let headers = if headers.is_empty() {
        String::new()
    } else {
        format!(" [{}]", headers.join(" "))
    };
    println!(
        "{partition}@{} key={key}{headers} {}",
        r["offset"],
        shown(r, "value")
    );
}

fn value_field(text: &str, json_value: bool, plain: bool) -> Result<(&'static str, Value)> {
    if plain {
        return Ok(("value_text", Value::String(text.to_owned())));
    }
    match serde_json::from_str::<Value>(text) {
        Ok(v) => Ok(("value", v)),
        Err(e) if json_value => Err(anyhow!("value is not JSON: {e}")),
        Err(_) => Ok(("value_text", Value::String(text.to_owned()))),
    }
}

/// Run a client subcommand (everything but `serve`).
pub fn run_client(options: &ClientOptions, command: Command) -> Result<()> {
    let client = Client::new(options);
    let json_out = options.json;
    match command {
        Command::Serve { .. } => bail!("serve is not a client command"),
        Command::Status => {
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
            println!(
                "server {} — {} (weir {}, up {}s)",
                client.base,
                health["status"].as_str().unwrap_or("?"),
                health["version"].as_str().unwrap_or("?"),
                health["uptime_seconds"]
            );
            print_topics(&topics);
            match plugins {
                Ok(p) => print_plugins(&p),
                Err(e) => println!("plugins: {e}"),
            }
        }
        Command::Topics(cmd) => topics(&client, json_out, cmd)?,
        Command::Produce {
            topic,
            value,
            key,
            partition,
            headers,
            json_value,
            text,
            idempotency_key,
        } => {
            let headers: Vec<(String, String)> = headers
                .iter()
                .map(|h| {
                    h.split_once('=')
                        .map(|(n, v)| (n.to_owned(), v.to_owned()))
                        .ok_or_else(|| anyhow!("header {h:?} is not name=value"))
                })
                .collect::<Result<_>>()?;
            let record = |text_value: &str| -> Result<Value> {
                let (field, v) = value_field(text_value, json_value, text)?;
                let mut r = json!({ field: v });
                if let Some(k) = &key {
                    r["key"] = json!(k);
                }
                if let Some(p) = partition {
                    r["partition"] = json!(p);
                }
                if !headers.is_empty() {
                    r["headers"] =
                        Value::Object(headers.iter().map(|(n, v)| (n.clone(), json!(v))).collect());
                }
                Ok(r)
            };
            let path = format!("/topics/{}/records", encode_path(&topic));
            let idem: Vec<(&str, &str)> = idempotency_key
                .as_deref()
                .map(|k| vec![("idempotency-key", k)])
                .unwrap_or_default();
            match value {
                Some(v) => {
                    let answer = ok(client.send(
                        "POST",
                        &path,
                        "application/json",
                        &idem,
                        record(&v)?.to_string().as_bytes(),
                    )?)?;
                    if json_out {
                        print_json(&answer);
                    } else {
                        println!("{topic}/{}@{}", answer["partition"], answer["offset"]);
                    }
                }
                None => {
                    let stdin = std::io::stdin();
                    let mut batch = Vec::new();
                    let mut total = 0usize;
                    let mut flush = |batch: &mut Vec<Value>| -> Result<()> {
                        if batch.is_empty() {
                            return Ok(());
                        }
                        let answer = ok(client.post_json(&path, &json!({"records": batch}))?)?;
                        total += batch.len();
                        if json_out {
                            println!("{answer}");
                        }
                        batch.clear();
                        Ok(())
                    };
                    for line in stdin.lock().lines() {
                        let line = line.context("reading stdin")?;
                        if line.trim().is_empty() {
                            continue;
                        }
                        batch.push(record(&line)?);
                        if batch.len() >= 500 {
                            flush(&mut batch)?;
                        }
                    }
                    flush(&mut batch)?;
                    if !json_out {
                        println!("produced {total} records to {topic}");
                    }
                }
            }
        }
        Command::Tail {
            topic,
            partition,
            from,
            follow,
            limit,
        } => tail(&client, json_out, &topic, partition, &from, follow, limit)?,
        Command::Deploy {
            manifest,
            component,
        } => {
            let manifest_text = if manifest.trim_start().starts_with('{') {
                manifest.clone()
            } else {
                std::fs::read_to_string(&manifest).with_context(|| format!("reading {manifest}"))?
            };
            let manifest_json: Value = serde_json::from_str(&manifest_text)
                .with_context(|| format!("the manifest {manifest} is not JSON"))?;
            let wasm = std::fs::read(&component)
                .with_context(|| format!("reading {}", component.display()))?;
            let body = json!({"manifest": manifest_json, "component_base64": B64.encode(&wasm)});
            let answer = ok(client.post_json("/plugins", &body)?)?;
            if json_out {
                print_json(&answer);
            } else {
                println!(
                    "deployed {} version {} ({})",
                    answer["name"].as_str().unwrap_or("?"),
                    answer["active_version"],
                    answer["kind"].as_str().unwrap_or("?")
                );
            }
        }
        Command::Plugins(cmd) => plugins(&client, json_out, cmd)?,
        Command::Pond(cmd) => {
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
                        for e in answer["entries"].as_array().into_iter().flatten() {
                            println!("{} = {}", shown(e, "key"), shown(e, "value"));
                        }
                    }
                    PondCommand::Query { .. } => print_json(&answer),
                }
            }
        }
        Command::Command {
            service,
            aggregate,
            name,
            data,
            no_wait,
            expected_version,
            id,
        } => {
            let mut body = json!({"aggregate": aggregate, "name": name});
            if let Some(d) = data {
                let (field, v) = value_field(&d, false, false)?;
                body[field.replace("value", "data")] = v;
            }
            if let Some(v) = expected_version {
                body["expected_version"] = json!(v);
            }
            if let Some(i) = id {
                body["id"] = json!(i);
            }
            let path = format!(
                "/services/{}/commands{}",
                encode_path(&service),
                if no_wait { "" } else { "?wait=true" }
            );
            let answer = client.post_json(&path, &body)?;
            let status = answer.status;
            if json_out {
                print_json(&answer.body);
            }
            let answer = ok(answer)?;
            if !json_out {
                match answer["status"].as_str() {
                    Some("applied") => {
                        println!(
                            "applied (tracking id {}) → version {}",
                            answer["tracking_id"].as_str().unwrap_or("?"),
                            answer["version"]
                        );
                        for e in answer["events"].as_array().into_iter().flatten() {
                            println!(
                                "  {} {}",
                                e["name"].as_str().unwrap_or("?"),
                                shown(e, "data")
                            );
                        }
                    }
                    _ => println!(
                        "accepted (tracking id {}) at {}/{}@{} [{status}]",
                        answer["tracking_id"].as_str().unwrap_or("?"),
                        answer["topic"].as_str().unwrap_or("?"),
                        answer["partition"],
                        answer["offset"]
                    ),
                }
            }
        }
    }
    Ok(())
}

fn print_topics(topics: &Value) {
    let list = topics["topics"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("no topics");
        return;
    }
    println!("{:<40} {:>10} {:>14}", "TOPIC", "PARTITIONS", "RECORDS");
    for t in list {
        let parts = t["partitions"].as_array().cloned().unwrap_or_default();
        let records: u64 = parts
            .iter()
            .map(|p| {
                p["end_offset"].as_u64().unwrap_or(0) - p["start_offset"].as_u64().unwrap_or(0)
            })
            .sum();
        println!(
            "{:<40} {:>10} {:>14}",
            t["name"].as_str().unwrap_or("?"),
            parts.len(),
            records
        );
    }
}

fn print_plugins(plugins: &Value) {
    let list = plugins["plugins"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("no plugins");
        return;
    }
    println!(
        "{:<30} {:<16} {:<8} {:>7} {:>10} {:>7}",
        "PLUGIN", "KIND", "STATE", "VERSION", "LAG", "ERRORS"
    );
    for p in list {
        let lag: u64 = p["partitions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| x["lag"].as_u64().unwrap_or(0))
            .sum();
        println!(
            "{:<30} {:<16} {:<8} {:>7} {:>10} {:>7}",
            p["name"].as_str().unwrap_or("?"),
            p["kind"].as_str().unwrap_or("?"),
            p["state"].as_str().unwrap_or("?"),
            p["active_version"].as_u64().unwrap_or(0),
            lag,
            p["error_count"].as_u64().unwrap_or(0)
        );
    }
}

fn print_plugin(p: &Value) {
    println!(
        "{} ({}) — {}, version {}",
        p["name"].as_str().unwrap_or("?"),
        p["kind"].as_str().unwrap_or("?"),
        p["state"].as_str().unwrap_or("?"),
        p["active_version"]
    );
    println!("  inputs: {}  outputs: {}", p["inputs"], p["outputs"]);
    println!(
        "  errors: {}  dead-lettered: {}",
        p["error_count"], p["dead_lettered"]
    );
    if let Some(e) = p["last_error"].as_object() {
        println!(
            "  last error: {}",
            e.get("message").and_then(Value::as_str).unwrap_or("?")
        );
    }
    println!("  versions:");
    for v in p["versions"].as_array().into_iter().flatten() {
        let sha = v["sha256"].as_str().unwrap_or("");
        println!(
            "    {}{} sha256:{}",
            v["version"],
            if v["active"].as_bool() == Some(true) {
                " (active)"
            } else {
                ""
            },
            &sha[..sha.len().min(12)]
        );
    }
    println!("  partitions:");
    for x in p["partitions"].as_array().into_iter().flatten() {
        println!(
            "    {}/{}: committed {} of {} (lag {})",
            x["topic"].as_str().unwrap_or("?"),
            x["partition"],
            x["committed_offset"],
            x["end_offset"],
            x["lag"]
        );
    }
}

fn topics(client: &Client, json_out: bool, cmd: TopicsCommand) -> Result<()> {
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
        TopicsCommand::List => print_topics(&answer),
        TopicsCommand::Create {
            name, partitions, ..
        } => println!("created topic {name} with {partitions} partition(s)"),
        TopicsCommand::Inspect { .. } => {
            println!("{}", answer["name"].as_str().unwrap_or("?"));
            for p in answer["partitions"].as_array().into_iter().flatten() {
                println!(
                    "  partition {}: offsets {}..{}",
                    p["partition"], p["start_offset"], p["end_offset"]
                );
            }
        }
        TopicsCommand::Delete { name } => println!("deleted topic {name}"),
    }
    Ok(())
}

fn plugins(client: &Client, json_out: bool, cmd: PluginsCommand) -> Result<()> {
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
        PluginsCommand::List => print_plugins(&answer),
        PluginsCommand::Delete { name } => println!("deleted plugin {name}"),
        _ => print_plugin(&answer),
    }
    Ok(())
}

fn tail(
    client: &Client,
    json_out: bool,
    topic: &str,
    partition: Option<u32>,
    from: &str,
    follow: bool,
    limit: Option<usize>,
) -> Result<()> {
    let mut printed = 0usize;
    let mut emit = |p: u64, r: &Value| -> bool {
        if json_out {
            let mut r = r.clone();
            r["partition"] = json!(p);
            println!("{r}");
        } else {
            print_record(p, r);
        }
        let _ = std::io::stdout().flush();
        printed += 1;
        limit.is_none_or(|l| printed < l)
    };
    if follow {
        let mut url = format!(
            "/topics/{}/tail?from={}",
            encode_path(topic),
            encode_path(from)
        );
        if let Some(p) = partition {
            url.push_str(&format!("&partition={p}"));
        }
        let mut req = client.agent.get(client.url(&url));
        if let Some(t) = &client.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = req
            .call()
            .with_context(|| format!("cannot reach the weir server at {}", client.base))?;
        if resp.status() != 200 {
            return ok(client.finish(Ok(resp))?).map(|_| ());
        }
        let reader = std::io::BufReader::new(resp.into_body().into_reader());
        for line in reader.lines() {
            let line = line.context("reading the tail stream")?;
            if let Some(data) = line.strip_prefix("data: ") {
                let r: Value = serde_json::from_str(data).context("bad tail event")?;
                if r.get("error").is_some() {
                    bail!(
                        "{}",
                        r["error"]["message"]
                            .as_str()
                            .unwrap_or("tail ended with an error")
                    );
                }
                let p = r["partition"].as_u64().unwrap_or(0);
                if !emit(p, &r) {
                    break;
                }
            }
        }
        return Ok(());
    }
    let info = ok(client.get(&format!("/topics/{}", encode_path(topic)))?)?;
    let partitions: Vec<u64> = match partition {
        Some(p) => vec![p as u64],
        None => info["partitions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["partition"].as_u64())
            .collect(),
    };
    for p in partitions {
        let mut offset = from.to_owned();
        loop {
            let page = ok(client.get(&format!(
                "/topics/{}/partitions/{p}/records?offset={}&limit=1000",
                encode_path(topic),
                encode_path(&offset)
            ))?)?;
            let records = page["records"].as_array().cloned().unwrap_or_default();
            for r in &records {
                if !emit(p, r) {
                    return Ok(());
                }
            }
            let next = page["next_offset"].as_u64().unwrap_or(0);
            if records.is_empty() || next >= page["end_offset"].as_u64().unwrap_or(0) {
                break;
            }
            offset = next.to_string();
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
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
            matches!(cli.command, Command::Produce { ref topic, ref key, .. } if topic == "orders" && key.as_deref() == Some("k1"))
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
