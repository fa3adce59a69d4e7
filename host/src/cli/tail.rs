//! `weir tail`: print a topic's records, and keep following with `-f`.

use std::io::{BufRead, Write};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::{Value, json};

use super::answers::{Page, Topic, typed};
use super::client::{Client, encode_path, ok};
use super::output::print_record;

#[derive(Debug, Args)]
pub struct TailArgs {
    pub topic: String,
    #[arg(long, short)]
    pub partition: Option<u32>,
    /// earliest | latest | an offset (with --partition)
    #[arg(long, default_value = "earliest")]
    pub from: String,
    /// Keep printing new records until interrupted
    #[arg(long, short)]
    pub follow: bool,
    /// Stop after this many records
    #[arg(long, short = 'n')]
    pub limit: Option<usize>,
}

/// Print the records from `--from`, following new ones with `-f`.
pub fn run(client: &Client, json_out: bool, args: TailArgs) -> Result<()> {
    let TailArgs {
        topic,
        partition,
        from,
        follow,
        limit,
    } = args;
    let (topic, from) = (topic.as_str(), from.as_str());
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
    let info: Topic = typed(&ok(client.get(&format!("/topics/{}", encode_path(topic)))?)?)?;
    let partitions: Vec<u64> = match partition {
        Some(p) => vec![p as u64],
        None => info.partitions.iter().map(|p| p.partition as u64).collect(),
    };
    for p in partitions {
        let mut offset = from.to_owned();
        loop {
            let page: Page = typed(&ok(client.get(&format!(
                "/topics/{}/partitions/{p}/records?offset={}&limit=1000",
                encode_path(topic),
                encode_path(&offset)
            ))?)?)?;
            for r in &page.records {
                if !emit(p, r) {
                    return Ok(());
                }
            }
            if page.records.is_empty() || page.next_offset >= page.end_offset {
                break;
            }
            offset = page.next_offset.to_string();
        }
    }
    Ok(())
}
