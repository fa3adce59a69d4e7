//! Crash harness against the real `weir` binary (fsync `always`): an
//! enricher + two projections + a command handler run while a driver thread
//! produces orders and customers and sends bank commands over HTTP,
//! remembering every acknowledged answer. The test SIGKILLs the server at
//! random moments (now and then right after it came back, while processors
//! are still recovering), restarts it on the same data dir, and at the end
//! checks over HTTP that
//! - every acknowledged produce survived, and no record was appended twice:
//!   a produce request the kill cut off is retried with its idempotency key
//!   until answered, so every record in the log was acknowledged exactly once
//!   (also for requests spread over both partitions, whose parts a kill may
//!   separate);
//! - every order is in `orders.enriched` exactly once;
//! - both ponds equal a fold of their input topic, and still do after a
//!   from-scratch rebuild through `/plugins/{name}/rebuild`;
//! - every aggregate's versions are contiguous from 1, each applied command
//!   has exactly one event (none for rejected or conflicting ones) at the
//!   version it was acknowledged with;
//! - a command id retried after a kill (and any acknowledged id re-sent
//!   later) answers its first result, and every command in the commands
//!   topic has a result. Some commands are put into the commands topic
//!   twice without an expected version before they are handled, so a
//!   handler that applied an id twice shows (checked: disabling its
//!   de-duplication fails this test);
//! - every command that named a reply topic (`bank.results` or
//!   `bank.private.reply`) has exactly one reply there, matching its result,
//!   and no other command has one.
//!
//! Meanwhile a deployer thread hot-swaps the enricher and the `totals` pond
//! (re-deploys of the same builds, and now and then a rollback), so kills
//! also land in the middle of deploys and version switches; at the end every
//! acknowledged version is still registered and the active one is the last
//! acknowledged (unless a later request was cut off by a kill).
//!
//! CI runs 30 kills (about a minute); a soak is its own command:
//!
//!   WEIR_CRASH_CYCLES=500 cargo test -p weir-host --test e2e kill_9 -- --nocapture

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{Value, json};
use weir_testkit::plugins::plugin_bytes;
use weir_testkit::server::Server;

use crate::plugins::all_records;
use crate::start;

const CUSTOMERS: u64 = 40;
const ACCOUNTS: u64 = 12;
const CATCH_UP: Duration = Duration::from_secs(120);
/// The driver gives up when the server stays unreachable this long.
const UNREACHABLE: Duration = Duration::from_secs(120);

/// The first answer to a command, as the driver saw it.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Applied { version: u64 },
    Conflict { expected: u64, actual: u64 },
    Rejected { reason: String },
}

/// A command the driver got an answer for.
#[derive(Debug, Clone)]
struct Acked {
    aggregate: String,
    body: Value,
    outcome: Outcome,
}

/// Everything the server acknowledged, and whatever looked wrong on the way.
#[derive(Default)]
struct Ledger {
    orders: Vec<u64>,
    customers: Vec<u64>,
    commands: BTreeMap<String, Acked>,
    /// Commands whose first attempt failed (the server died) and were retried.
    retried_after_error: u64,
    /// Produce requests cut off by a kill and retried with their key.
    produces_retried: u64,
    /// Produce requests whose records went to more than one partition.
    produces_spread: u64,
    /// Acknowledged commands re-sent later that answered their first result.
    resent_checked: u64,
    anomalies: Vec<String>,
}

/// A tiny HTTP client that follows the server across restarts (each start
/// picks a new port) and tells "the server is gone" (`Err`) from an answer.
struct Client {
    url: Arc<RwLock<String>>,
    agent: ureq::Agent,
}

impl Client {
    fn new(url: Arc<RwLock<String>>) -> Client {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Client { url, agent }
    }

    fn base(&self) -> String {
        self.url.read().map(|u| u.clone()).unwrap_or_default()
    }

    fn post(&self, path: &str, body: &Value) -> Result<(u16, Value), ureq::Error> {
        self.post_with(path, body, &[])
    }

    fn post_with(
        &self,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> Result<(u16, Value), ureq::Error> {
        let mut request = self
            .agent
            .post(&format!("{}{path}", self.base()))
            .header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        Self::parse(request.send(body.to_string().as_bytes())?)
    }

    /// Deploy a component: `PUT /plugins/{name}` with the manifest in a header.
    fn deploy(&self, manifest: &Value, component: &[u8]) -> Result<(u16, Value), ureq::Error> {
        let name = manifest["name"].as_str().unwrap_or("unnamed");
        let resp = self
            .agent
            .put(&format!("{}/plugins/{name}", self.base()))
            .header("content-type", "application/wasm")
            .header("weir-manifest", &manifest.to_string())
            .send(component)?;
        Self::parse(resp)
    }

    fn get(&self, path: &str) -> Result<(u16, Value), ureq::Error> {
        let resp = self.agent.get(&format!("{}{path}", self.base())).call()?;
        Self::parse(resp)
    }

    fn parse(resp: ureq::http::Response<ureq::Body>) -> Result<(u16, Value), ureq::Error> {
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        let bytes = body.read_to_vec()?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }
}

/// The outcome an answer carries, `None` for "not handled yet" (202 / 404).
fn outcome_of(status: u16, json: &Value) -> Result<Option<Outcome>, String> {
    match status {
        200 => json["version"]
            .as_u64()
            .map(|version| Some(Outcome::Applied { version }))
            .ok_or_else(|| format!("applied without a version: {json}")),
        409 => match (
            json["error"]["expected_version"].as_u64(),
            json["error"]["actual_version"].as_u64(),
        ) {
            (Some(expected), Some(actual)) => Ok(Some(Outcome::Conflict { expected, actual })),
            _ => Err(format!("409 without versions: {json}")),
        },
        422 if json["error"]["code"] == "command_rejected" => Ok(Some(Outcome::Rejected {
            reason: json["error"]["reason"].as_str().unwrap_or("").to_owned(),
        })),
        202 | 404 => Ok(None),
        _ => Err(format!("unexpected answer {status}: {json}")),
    }
}

struct Driver {
    client: Client,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
    next_order: u64,
    next_customer: u64,
    next_command: u64,
    versions: HashMap<String, u64>,
}

impl Driver {
    fn note(&self, anomaly: String) {
        if let Ok(mut l) = self.ledger.lock() {
            l.anomalies.push(anomaly);
        }
    }

    /// One produce request, sent with an idempotency key until it is
    /// answered: a request the kill cut off may or may not have been
    /// appended (in part, when it spans partitions), and its retry on the
    /// next server must append exactly what is missing. Acknowledged ids go
    /// to the ledger. False when it had to be retried.
    fn produce(&mut self, topic: &str, records: Vec<Value>, ids: Vec<u64>) -> bool {
        let key = format!("{topic}-{}", ids.first().copied().unwrap_or_default());
        let body = json!({"records": records});
        let started = Instant::now();
        let mut failed = false;
        loop {
            if started.elapsed() > UNREACHABLE {
                self.note(format!("produce {key}: no answer within {UNREACHABLE:?}"));
                return false;
            }
            match self.client.post_with(
                &format!("/topics/{topic}/records"),
                &body,
                &[("idempotency-key", &key)],
            ) {
                Ok((200, answer)) => {
                    let partitions: HashSet<u64> = answer["records"]
                        .as_array()
                        .map(|rs| rs.iter().filter_map(|r| r["partition"].as_u64()).collect())
                        .unwrap_or_default();
                    if let Ok(mut l) = self.ledger.lock() {
                        match topic {
                            "orders" => l.orders.extend(ids),
                            _ => l.customers.extend(ids),
                        }
                        l.produces_retried += u64::from(failed);
                        l.produces_spread += u64::from(partitions.len() > 1);
                    }
                    return !failed;
                }
                Ok((status, body)) => {
                    self.note(format!("produce {key} answered {status}: {body}"));
                    return true;
                }
                Err(_) => {
                    failed = true;
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }

    /// Send a command until its outcome is known: a transport error (the
    /// server died) means retry the same id on the next server.
    fn command(&mut self, id: &str, body: &Value) -> Option<(Outcome, bool)> {
        let started = Instant::now();
        let mut failed = false;
        loop {
            if started.elapsed() > UNREACHABLE {
                self.note(format!("command {id}: no outcome within {UNREACHABLE:?}"));
                return None;
            }
            let answer = match self
                .client
                .post("/services/bank/commands?wait=true&timeout_ms=5000", body)
            {
                Ok(a) => a,
                Err(_) => {
                    failed = true;
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
            };
            match outcome_of(answer.0, &answer.1) {
                Ok(Some(outcome)) => return Some((outcome, failed)),
                Ok(None) => {
                    // Durable but not handled yet: ask for the result.
                    std::thread::sleep(Duration::from_millis(20));
                    if let Ok((status, json)) =
                        self.client.get(&format!("/services/bank/commands/{id}"))
                        && let Ok(Some(outcome)) = outcome_of(status, &json)
                    {
                        return Some((outcome, failed));
                    }
                }
                Err(e) => {
                    self.note(format!("command {id}: {e}"));
                    return None;
                }
            }
        }
    }

    fn step(&mut self, rng: &mut impl Rng) -> bool {
        let mut reachable = true;
        // Orders: a batch of 1–8, keyed by customer.
        let n = rng.random_range(1..=8);
        let ids: Vec<u64> = (self.next_order..self.next_order + n).collect();
        self.next_order += n;
        // Mostly one customer per request (one partition); now and then a
        // customer per record, so the request spans both partitions and a
        // kill can land between its parts.
        let spread = rng.random_bool(0.4);
        let first = format!("c{}", rng.random_range(0..CUSTOMERS));
        let records = ids
            .iter()
            .map(|i| {
                let customer = if spread {
                    format!("c{}", rng.random_range(0..CUSTOMERS))
                } else {
                    first.clone()
                };
                json!({"key": customer, "value": {"id": format!("o{i}"), "customer": customer, "amount": i % 97 + 1}})
            })
            .collect();
        reachable &= self.produce("orders", records, ids);
        // Customers now and then (the enricher looks them up in their pond).
        if rng.random_bool(0.3) {
            let id = self.next_customer;
            self.next_customer += 1;
            let customer = format!("c{}", rng.random_range(0..CUSTOMERS));
            let record = json!({"key": customer, "value": {"id": format!("u{id}"), "customer": customer, "amount": 1}});
            reachable &= self.produce("customers", vec![record], vec![id]);
        }
        // A command with an expected version: open first, then deposits,
        // withdrawals (some rejected) and a few deliberately stale ones.
        let k = self.next_command;
        self.next_command += 1;
        let aggregate = format!("acc-{}", rng.random_range(0..ACCOUNTS));
        let version = self.versions.get(&aggregate).copied().unwrap_or(0);
        let (name, data, expected, stale) = if version == 0 {
            ("open", json!({"owner": "driver"}), 0, false)
        } else if rng.random_bool(0.1) {
            ("deposit", json!({"amount": 1}), version + 3, true)
        } else if rng.random_bool(0.35) {
            (
                "withdraw",
                json!({"amount": rng.random_range(1..200)}),
                version,
                false,
            )
        } else {
            (
                "deposit",
                json!({"amount": rng.random_range(1..100)}),
                version,
                false,
            )
        };
        let id = format!("cmd-{k}");
        let mut body = json!({"id": id, "aggregate": aggregate, "name": name, "data": data, "expected_version": expected});
        // Some commands want their result in a reply topic as well.
        if rng.random_bool(0.4) {
            let topic = if rng.random_bool(0.5) {
                "bank.results"
            } else {
                "bank.private.reply"
            };
            body["reply_topic"] = json!(topic);
        }
        if !stale && rng.random_bool(0.15) {
            // The same id twice into the commands topic before it is handled
            // (what a client retry racing a restart does), here without an
            // expected version: only the handler's own de-duplication stops
            // a second application.
            body.as_object_mut().map(|b| b.remove("expected_version"));
            for _ in 0..2 {
                let _ = self.client.post("/services/bank/commands", &body);
            }
        }
        if let Some((outcome, retried)) = self.command(&id, &body) {
            match &outcome {
                Outcome::Applied { version: v } if *v == expected + 1 && !stale => {
                    self.versions.insert(aggregate.clone(), *v);
                }
                Outcome::Conflict { actual, .. } if stale && *actual == version => {}
                Outcome::Rejected { .. } if name == "withdraw" => {}
                other => self.note(format!(
                    "command {id} ({name}, expected {expected}, known version {version}): {other:?}"
                )),
            }
            if let Ok(mut l) = self.ledger.lock() {
                l.retried_after_error += u64::from(retried);
                l.commands.insert(
                    id.clone(),
                    Acked {
                        aggregate,
                        body: body.clone(),
                        outcome,
                    },
                );
            }
            // Right after a kill, and now and then anyway, re-send an
            // acknowledged command: it must answer its first result.
            if retried || rng.random_bool(0.1) {
                self.resend_one(rng);
            }
        }
        reachable
    }

    fn resend_one(&mut self, rng: &mut impl Rng) {
        let pick = self.ledger.lock().ok().and_then(|l| {
            let n = l.commands.len();
            (n > 0).then(|| {
                let (id, acked) = l
                    .commands
                    .iter()
                    .nth(rng.random_range(0..n))
                    .expect("index below len");
                (id.clone(), acked.clone())
            })
        });
        let Some((id, acked)) = pick else { return };
        if let Some((outcome, _)) = self.command(&id, &acked.body)
            && let Ok(mut l) = self.ledger.lock()
        {
            if outcome == acked.outcome {
                l.resent_checked += 1;
            } else {
                l.anomalies.push(format!(
                    "command {id} re-sent answered {outcome:?}, first {:?}",
                    acked.outcome
                ));
            }
        }
    }

    fn run(mut self) {
        let mut rng = rand::rng();
        let mut down_since: Option<Instant> = None;
        while !self.stop.load(Ordering::Relaxed) {
            if self.step(&mut rng) {
                down_since = None;
            } else {
                let since = *down_since.get_or_insert_with(Instant::now);
                if since.elapsed() > UNREACHABLE {
                    self.note(format!("server unreachable for {UNREACHABLE:?}"));
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// The pipeline's processors: manifest and example plugin.
fn pipeline() -> [(Value, &'static str); 4] {
    [
        (
            json!({"name": "customers", "kind": "projection", "inputs": ["customers"]}),
            "projection_totals",
        ),
        (
            json!({"name": "enrich", "kind": "enricher", "inputs": ["orders"], "outputs": ["orders.enriched"],
                   "config": {"customers_pond": "customers"}}),
            "enricher_orders",
        ),
        (
            json!({"name": "totals", "kind": "projection", "inputs": ["orders"]}),
            "projection_totals",
        ),
        (
            json!({"name": "bank", "kind": "command-handler", "partitions": 2}),
            "command_bank",
        ),
    ]
}

fn deploy_pipeline(s: &Server) {
    s.create_topic("orders", 2);
    s.create_topic("customers", 1);
    for (manifest, plugin) in pipeline() {
        let r = s.deploy(&manifest, &plugin_bytes(plugin));
        assert_eq!(r.status, 201, "deploy {}: {}", manifest["name"], r.json);
    }
}

const PLUGINS: [&str; 4] = ["customers", "enrich", "totals", "bank"];

/// What the deployer got acknowledged, per processor.
#[derive(Default)]
struct Deployments {
    /// Versions a deploy was acknowledged with (201).
    deployed: BTreeMap<String, Vec<u64>>,
    /// The active version after the last acknowledged deploy or rollback,
    /// and whether a later request was cut off (then either may be active).
    last: BTreeMap<String, (u64, bool)>,
    rollbacks: u64,
    anomalies: Vec<String>,
}

/// Hot swaps during the kills: re-deploys `enrich` and `totals` (the same
/// builds, so the outputs stay checkable, with another `retries` so that
/// most deploys are a new version) and now and then rolls one back.
fn run_deployer(client: Client, stop: Arc<AtomicBool>, out: Arc<Mutex<Deployments>>) {
    let mut rng = rand::rng();
    let swapped: Vec<(Value, Vec<u8>)> = pipeline()
        .into_iter()
        .filter(|(m, _)| m["name"] == "enrich" || m["name"] == "totals")
        .map(|(m, plugin)| (m, plugin_bytes(plugin)))
        .collect();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(rng.random_range(100..400)));
        let (manifest, component) = &swapped[rng.random_range(0..swapped.len())];
        let mut manifest = manifest.clone();
        manifest["retries"] = json!(rng.random_range(2..6));
        let name = manifest["name"].as_str().unwrap_or_default().to_string();
        let rollback = rng.random_bool(0.25);
        let answer = if rollback {
            client.post(&format!("/plugins/{name}/rollback"), &json!({}))
        } else {
            client.deploy(&manifest, component)
        };
        let Ok(mut out) = out.lock() else { return };
        match answer {
            Ok((status, body)) if status == 201 || (rollback && status == 200) => {
                let Some(version) = body["active_version"].as_u64() else {
                    out.anomalies
                        .push(format!("{name}: no active_version in {body}"));
                    continue;
                };
                if rollback {
                    out.rollbacks += 1;
                } else {
                    out.deployed.entry(name.clone()).or_default().push(version);
                }
                out.last.insert(name, (version, false));
            }
            // Nothing older to roll back to.
            Ok((409, _)) if rollback => {}
            Ok((status, body)) => out.anomalies.push(format!(
                "{name}: {} answered {status}: {body}",
                if rollback { "rollback" } else { "deploy" }
            )),
            // The server died under the request: it may or may not have taken effect.
            Err(_) => {
                if let Some(last) = out.last.get_mut(&name) {
                    last.1 = true;
                }
            }
        }
    }
}

/// Every acknowledged version survived the kills, and the active version is
/// the last acknowledged one unless a later request was cut off.
fn check_deployments(s: &Server, d: &Deployments) -> usize {
    assert!(
        d.anomalies.is_empty(),
        "deploys went wrong:\n{}",
        d.anomalies.join("\n")
    );
    let mut checked = 0;
    for (name, versions) in &d.deployed {
        let r = s.get(&format!("/plugins/{name}"));
        assert_eq!(r.status, 200, "{name}: {}", r.json);
        let registered: HashSet<u64> = r.json["versions"]
            .as_array()
            .map(|vs| vs.iter().filter_map(|v| v["version"].as_u64()).collect())
            .unwrap_or_default();
        for v in versions {
            assert!(
                registered.contains(v),
                "{name}: acknowledged version {v} was lost"
            );
            checked += 1;
        }
        if let Some(&(version, cut_off_later)) = d.last.get(name)
            && !cut_off_later
        {
            assert_eq!(
                r.json["active_version"].as_u64(),
                Some(version),
                "{name}: active version"
            );
        }
    }
    checked
}

/// Every processor running with no lag and no rebuild under way.
fn caught_up(s: &Server) -> bool {
    PLUGINS.iter().all(|name| {
        let r = s.get(&format!("/plugins/{name}"));
        r.status == 200
            && r.json["state"] == "running"
            && r.json["rebuilding_generation"].is_null()
            && r.json["partitions"]
                .as_array()
                .is_some_and(|ps| ps.iter().all(|p| p["lag"] == 0))
    })
}

fn header<'a>(record: &'a Value, name: &str) -> Option<&'a str> {
    record["headers"]
        .as_array()?
        .iter()
        .find(|h| h["name"] == name)?["value"]
        .as_str()
}

/// `"o17"` → 17.
fn numbered(id: &Value, prefix: char) -> u64 {
    id.as_str()
        .and_then(|s| s.strip_prefix(prefix))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a {prefix}-id: {id}"))
}

/// Ids of a topic's records (`value.id`), asserting none is there twice and
/// every acknowledged one is.
fn check_survived(s: &Server, topic: &str, prefix: char, acked: &[u64]) -> Vec<Value> {
    let records = all_records(s, topic);
    let mut ids = HashSet::new();
    for r in &records {
        let id = numbered(&r["value"]["id"], prefix);
        assert!(ids.insert(id), "{topic}: {prefix}{id} appended twice");
    }
    let lost: Vec<u64> = acked.iter().filter(|i| !ids.contains(i)).copied().collect();
    assert!(
        lost.is_empty(),
        "{topic}: {} acknowledged records lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    // Every request was retried until answered: nothing unacknowledged stays.
    assert_eq!(
        records.len(),
        acked.len(),
        "{topic}: unacknowledged records appended"
    );
    records
}

/// `{"count", "sum"}` per customer, folded from the records themselves.
fn fold_totals(records: &[Value]) -> BTreeMap<String, Value> {
    let mut totals: BTreeMap<String, (u64, i64)> = BTreeMap::new();
    for r in records {
        let e = totals
            .entry(
                r["value"]["customer"]
                    .as_str()
                    .expect("customer")
                    .to_owned(),
            )
            .or_default();
        e.0 += 1;
        e.1 += r["value"]["amount"].as_i64().expect("amount");
    }
    totals
        .into_iter()
        .map(|(k, (count, sum))| (k, json!({"count": count, "sum": sum})))
        .collect()
}

fn pond(s: &Server, name: &str) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let mut after = String::new();
    loop {
        let r = s.get(&format!(
            "/ponds/{name}/keys?prefix=&start_after={after}&limit=1000"
        ));
        assert_eq!(r.status, 200, "list pond {name}: {}", r.json);
        for e in r.json["entries"].as_array().cloned().unwrap_or_default() {
            out.insert(
                e["key"].as_str().expect("utf-8 key").to_owned(),
                e["value"].clone(),
            );
        }
        match r.json["next_start_after"].as_str() {
            Some(next) if !next.is_empty() => after = next.to_owned(),
            _ => return out,
        }
    }
}

fn check_ponds_equal_folds(s: &Server, orders: &[Value], customers: &[Value], when: &str) {
    assert_eq!(pond(s, "totals"), fold_totals(orders), "totals pond {when}");
    assert_eq!(
        pond(s, "customers"),
        fold_totals(customers),
        "customers pond {when}"
    );
}

/// Versions contiguous per aggregate, one event per applied command at its
/// acknowledged version, none for the others, every command answered.
fn check_commands(s: &Server, ledger: &Ledger) -> (usize, usize, usize) {
    let events = all_records(s, "bank.events");
    let mut versions: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut by_command: HashMap<String, Vec<(String, u64)>> = HashMap::new();
    for e in &events {
        let aggregate = e["key"].as_str().expect("aggregate key").to_owned();
        let version: u64 = header(e, "weir-version")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("event without a version: {e}"));
        let id = header(e, "weir-command-id").expect("event without a command id");
        versions.entry(aggregate.clone()).or_default().push(version);
        by_command
            .entry(id.to_owned())
            .or_default()
            .push((aggregate, version));
    }
    for (aggregate, vs) in &versions {
        let want: Vec<u64> = (1..=vs.len() as u64).collect();
        assert_eq!(vs, &want, "versions of {aggregate}");
    }
    for (id, evs) in &by_command {
        assert_eq!(evs.len(), 1, "command {id} applied more than once: {evs:?}");
    }
    for (id, acked) in &ledger.commands {
        let evs = by_command.get(id);
        match &acked.outcome {
            Outcome::Applied { version } => assert_eq!(
                evs.map(Vec::as_slice),
                Some(&[(acked.aggregate.clone(), *version)][..]),
                "command {id} acknowledged as applied at {version}"
            ),
            other => assert!(
                evs.is_none(),
                "command {id} answered {other:?} yet has events"
            ),
        }
    }
    let commands = all_records(s, "bank.commands");
    let ids: HashSet<&str> = commands
        .iter()
        .map(|c| header(c, "weir-command-id").expect("command without an id"))
        .collect();
    for id in &ids {
        let r = s.get(&format!("/services/bank/commands/{id}"));
        let outcome = outcome_of(r.status, &r.json)
            .unwrap_or_else(|e| panic!("result of {id}: {e}"))
            .unwrap_or_else(|| panic!("command {id} is in the topic but has no result"));
        if let Some(acked) = ledger.commands.get(*id) {
            assert_eq!(outcome, acked.outcome, "stored result of {id}");
        }
    }
    let replies = check_replies(s, &commands);
    (ids.len(), events.len(), replies)
}

/// Exactly one reply per command that named a reply topic, in that topic,
/// matching the command's stored result; none for other commands. Returns
/// the number of replies.
fn check_replies(s: &Server, commands: &[Value]) -> usize {
    let mut wanted: HashMap<String, String> = HashMap::new();
    for c in commands {
        let id = header(c, "weir-command-id").expect("command without an id");
        if let Some(topic) = header(c, "weir-reply-topic") {
            let before = wanted.insert(id.to_owned(), topic.to_owned());
            assert!(
                before.is_none_or(|t| t == topic),
                "command {id} sent with two reply topics"
            );
        }
    }
    let mut found: HashMap<String, Vec<(String, Value)>> = HashMap::new();
    for topic in ["bank.results", "bank.private.reply"] {
        for r in all_records(s, topic) {
            let id = header(&r, "weir-correlation-id")
                .unwrap_or_else(|| panic!("reply without a correlation id: {r}"));
            assert_eq!(r["key"].as_str(), Some(id), "reply key: {r}");
            found
                .entry(id.to_owned())
                .or_default()
                .push((topic.to_owned(), r["value"].clone()));
        }
    }
    for (id, replies) in &found {
        let topic = wanted.get(id).unwrap_or_else(|| {
            panic!("command {id} named no reply topic, yet has replies: {replies:?}")
        });
        assert_eq!(
            replies.len(),
            1,
            "command {id} has {} replies: {replies:?}",
            replies.len()
        );
        assert_eq!(
            &replies[0].0, topic,
            "command {id}: reply in the wrong topic"
        );
        let stored = s.get(&format!("/services/bank/commands/{id}"));
        let reply = &replies[0].1;
        match stored.status {
            200 => assert_eq!(
                (reply["outcome"].as_str(), reply["version"].as_u64()),
                (Some("applied"), stored.json["version"].as_u64()),
                "reply of {id}"
            ),
            409 => assert_eq!(reply["outcome"], "conflict", "reply of {id}"),
            _ => assert_eq!(reply["outcome"], "rejected", "reply of {id}"),
        }
    }
    let missing: Vec<&String> = wanted
        .keys()
        .filter(|id| !found.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "commands without their reply: {missing:?}"
    );
    found.len()
}

#[test]
fn kill_9_at_random_moments_loses_and_duplicates_nothing() {
    let cycles: usize = std::env::var("WEIR_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let started = Instant::now();
    let mut s = start(&["--fsync", "always"]);
    deploy_pipeline(&s);

    let url = Arc::new(RwLock::new(s.url.clone()));
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let driver = Driver {
        client: Client::new(url.clone()),
        ledger: ledger.clone(),
        stop: stop.clone(),
        next_order: 0,
        next_customer: 0,
        next_command: 0,
        versions: HashMap::new(),
    };
    let driver = std::thread::spawn(move || driver.run());
    let deployments = Arc::new(Mutex::new(Deployments::default()));
    let deployer = {
        let (client, stop, out) = (Client::new(url.clone()), stop.clone(), deployments.clone());
        std::thread::spawn(move || run_deployer(client, stop, out))
    };

    let mut rng = rand::rng();
    for cycle in 0..cycles {
        // Mostly under load; every fifth kill right after the restart,
        // while processors are still recovering.
        let ms = if cycle % 5 == 4 {
            rng.random_range(0..30)
        } else {
            rng.random_range(100..700)
        };
        std::thread::sleep(Duration::from_millis(ms));
        assert!(!driver.is_finished(), "the driver stopped early");
        s.kill();
        s.restart();
        *url.write().expect("url lock") = s.url.clone();
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    driver.join().expect("driver thread");
    deployer.join().expect("deployer thread");
    let deployments = std::mem::take(&mut *deployments.lock().expect("deployments"));
    let ledger = std::mem::take(&mut *ledger.lock().expect("ledger"));
    assert!(
        ledger.anomalies.is_empty(),
        "the driver saw wrong answers:\n{}",
        ledger.anomalies.join("\n")
    );

    s.wait_until("the pipeline to catch up", CATCH_UP, caught_up);
    let versions_checked = check_deployments(&s, &deployments);
    let orders = check_survived(&s, "orders", 'o', &ledger.orders);
    let customers = check_survived(&s, "customers", 'u', &ledger.customers);

    let enriched = all_records(&s, "orders.enriched");
    let mut seen: HashMap<u64, u32> = HashMap::new();
    for r in &enriched {
        *seen.entry(numbered(&r["value"]["id"], 'o')).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "orders enriched more than once: {twice:?}"
    );
    assert_eq!(seen.len(), orders.len(), "every order enriched");

    check_ponds_equal_folds(&s, &orders, &customers, "after the kills");
    for name in ["totals", "customers"] {
        let r = s.post_json(&format!("/plugins/{name}/rebuild"), &json!({}));
        assert!(r.status < 300, "rebuild {name}: {}", r.json);
    }
    s.wait_until("the rebuilds to finish", CATCH_UP, caught_up);
    check_ponds_equal_folds(&s, &orders, &customers, "after a rebuild from offset 0");

    let (commands, events, replies) = check_commands(&s, &ledger);
    // Every acknowledged command, sent once more, answers its first result.
    let client = Client::new(Arc::new(RwLock::new(s.url.clone())));
    for (id, acked) in &ledger.commands {
        let (status, json) = client
            .post("/services/bank/commands?wait=true", &acked.body)
            .unwrap_or_else(|e| panic!("re-send {id}: {e}"));
        assert_eq!(
            outcome_of(status, &json).ok().flatten().as_ref(),
            Some(&acked.outcome),
            "re-sent {id}"
        );
    }
    assert_eq!(
        check_commands(&s, &ledger),
        (commands, events, replies),
        "re-sending changed nothing"
    );

    println!(
        "crash e2e: {cycles} kills in {:.1?}; orders {} ({} acknowledged), customers {} ({} acknowledged), \
         {} produce requests retried with their idempotency key after a kill, {} spread over partitions, \
         {} enriched, commands {commands} ({} acknowledged, {} retried after a kill, {} re-sent mid-run), {events} events, {replies} replies, \
         {versions_checked} acknowledged deploys and {} rollbacks",
        started.elapsed(),
        orders.len(),
        ledger.orders.len(),
        customers.len(),
        ledger.customers.len(),
        ledger.produces_retried,
        ledger.produces_spread,
        enriched.len(),
        ledger.commands.len(),
        ledger.retried_after_error,
        ledger.resent_checked,
        deployments.rollbacks,
    );
    assert!(
        ledger.orders.len() > cycles && !ledger.commands.is_empty(),
        "the workload barely ran"
    );
}
