//! `weir produce`: one record, or one record per line of stdin.

use std::io::BufRead;

use anyhow::{Context, Result, anyhow};
use clap::Args;
use serde_json::{Value, json};

use super::answers::{Placed, typed};
use super::client::{Client, encode_path, ok};
use super::output::print_json;

#[derive(Debug, Args)]
pub struct ProduceArgs {
    pub topic: String,
    /// The value; without it, each line of stdin is one record
    pub value: Option<String>,
    #[arg(long, short)]
    pub key: Option<String>,
    #[arg(long, short)]
    pub partition: Option<u32>,
    /// name=value, repeatable
    #[arg(long = "header", short = 'H')]
    pub headers: Vec<String>,
    /// Treat values as JSON (default: JSON if they parse, else text)
    #[arg(long, conflicts_with = "text")]
    pub json_value: bool,
    /// Treat values as plain text
    #[arg(long)]
    pub text: bool,
    /// A retried produce with the same key appends once
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

pub(super) fn value_field(
    text: &str,
    json_value: bool,
    plain: bool,
) -> Result<(&'static str, Value)> {
    if plain {
        return Ok(("value_text", Value::String(text.to_owned())));
    }
    match serde_json::from_str::<Value>(text) {
        Ok(v) => Ok(("value", v)),
        Err(e) if json_value => Err(anyhow!("value is not JSON: {e}")),
        Err(_) => Ok(("value_text", Value::String(text.to_owned()))),
    }
}

/// Append the records and print where they went.
pub fn run(client: &Client, json_out: bool, args: ProduceArgs) -> Result<()> {
    let ProduceArgs {
        topic,
        value,
        key,
        partition,
        headers,
        json_value,
        text,
        idempotency_key,
    } = args;
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
                let at: Placed = typed(&answer)?;
                println!("{topic}/{}@{}", at.partition, at.offset);
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
    Ok(())
}
