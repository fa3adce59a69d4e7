//! The command-handler (service) worker: the decider pattern.
//!
//! Commands arrive in the service's commands topic keyed by aggregate id,
//! so one partition task owns each aggregate and needs no locks. Per
//! command: a command id seen before returns its first result; otherwise
//! the aggregate's state is its latest snapshot (rebuilt by `evolve` over
//! the aggregate's events only when the snapshot was made by another
//! plugin build), the expected version is checked, `decide` runs, and the
//! events are appended to the events topic (key = aggregate id, headers:
//! event name, aggregate version, command id). When a command names a reply
//! topic (one of the service's own, `<service>.results` or
//! `<service>.private.reply`, created on first use: see `ownership`), its
//! result is written there keyed and headed by the command id. Events,
//! replies, snapshots, results and the checkpoint of a batch commit
//! together, so each has its effect exactly once; results are then
//! handed to waiters.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::batch::{Record, RecordBatch};
use crate::log::LogError;
use crate::runtime::{CallError, Command, CommandHandlerInstance, Event};
use crate::store::{AggregateSnapshot, CommitSet, PartitionPos};

use super::cluster::MAX_STEP_OUTPUTS;
use super::error::EngineError;
use super::ownership;
use super::task::{
    Outputs, TaskCtx, TaskError, Worker, add_dead_letters, check_output_sizes, commit_step,
    headers, slice, with_policy,
};

/// What became of a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum CommandOutcome {
    /// Durably in the service's commands topic; not handled yet.
    Accepted {
        topic: String,
        partition: u32,
        offset: u64,
    },
    /// Handled: these events were appended; the aggregate is at `version`.
    Applied { events: Vec<Event>, version: u64 },
    /// The aggregate was not at the expected version.
    Conflict { expected: u64, actual: u64 },
    /// The service refused the command (or kept failing on it:
    /// code `handler-failed`).
    Rejected { code: String, message: String },
}

impl CommandOutcome {
    /// The reply-topic rendering: event bodies as JSON when they are JSON.
    pub fn to_reply_json(&self, id: &str) -> serde_json::Value {
        let body = |data: &[u8]| {
            serde_json::from_slice::<serde_json::Value>(data).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(data).into_owned())
            })
        };
        match self {
            CommandOutcome::Applied { events, version } => serde_json::json!({
                "id": id, "outcome": "applied", "version": version,
                "events": events.iter().map(|e| serde_json::json!({"name": e.name, "data": body(&e.data)})).collect::<Vec<_>>(),
            }),
            other => {
                let mut v = serde_json::to_value(other).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.insert("id".into(), id.into());
                }
                v
            }
        }
    }
}

/// A command as it sits in the commands topic.
pub struct CommandRecord {
    pub id: String,
    pub command: Command,
    pub expected_version: Option<u64>,
    pub reply_topic: Option<String>,
}

impl CommandRecord {
    pub fn fingerprint(&self) -> String {
        fingerprint(
            &self.command.aggregate,
            &self.command.name,
            &self.command.data,
            self.expected_version,
            self.reply_topic.as_deref(),
        )
    }
}

/// What a command asks for, as a digest: a command sent again under its id
/// must carry the same one, else it is another command reusing the id.
pub fn fingerprint(
    aggregate: &str,
    name: &str,
    data: &[u8],
    expected_version: Option<u64>,
    reply_topic: Option<&str>,
) -> String {
    let expected = expected_version.map(|v| v.to_string());
    let mut bytes = Vec::with_capacity(data.len() + 64);
    for part in [
        Some(aggregate.as_bytes()),
        Some(name.as_bytes()),
        Some(data),
        expected.as_deref().map(str::as_bytes),
        reply_topic.map(str::as_bytes),
    ] {
        // Length-prefixed (absent: a marker no length has), so parts never run together.
        match part {
            Some(p) => bytes.extend_from_slice(&(p.len() as u64).to_le_bytes()),
            None => bytes.extend_from_slice(&u64::MAX.to_le_bytes()),
        }
        bytes.extend_from_slice(part.unwrap_or_default());
    }
    crate::runtime::sha256_hex(&bytes)
}

/// A command's first result as the store keeps it, with the fingerprint of
/// the command that got it (absent in results stored before there was one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResult {
    #[serde(flatten)]
    pub outcome: CommandOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

impl StoredResult {
    /// Was the result given to a command other than the one fingerprinted?
    pub fn answers_another(&self, fingerprint: &str) -> bool {
        self.fingerprint
            .as_deref()
            .is_some_and(|f| f != fingerprint)
    }
}

/// Build the commands-topic record for a command.
pub fn encode_command(
    id: &str,
    aggregate: &str,
    name: &str,
    data: &[u8],
    expected_version: Option<u64>,
    reply_topic: Option<&str>,
    timestamp: i64,
) -> Record {
    let mut h = vec![
        (headers::COMMAND_ID.to_string(), id.as_bytes().to_vec()),
        (headers::COMMAND.to_string(), name.as_bytes().to_vec()),
    ];
    if let Some(v) = expected_version {
        h.push((
            headers::EXPECTED_VERSION.to_string(),
            v.to_string().into_bytes(),
        ));
    }
    if let Some(t) = reply_topic {
        h.push((headers::REPLY_TOPIC.to_string(), t.as_bytes().to_vec()));
    }
    Record {
        key: aggregate.as_bytes().to_vec(),
        value: data.to_vec(),
        headers: h,
        timestamp,
    }
}

fn header<'a>(batch: &'a RecordBatch, i: usize, name: &str) -> Option<&'a [u8]> {
    batch
        .headers(i)
        .find(|(n, _)| *n == name.as_bytes())
        .map(|(_, v)| v)
}

fn header_str(batch: &RecordBatch, i: usize, name: &str) -> Option<String> {
    header(batch, i, name).map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Decode command `i` of a commands-topic batch. A command without an id
/// gets its position as id, so a replay still recognises it.
pub fn decode_command(topic: &str, partition: u32, batch: &RecordBatch, i: usize) -> CommandRecord {
    let offset = batch.offsets[i];
    let id = header_str(batch, i, headers::COMMAND_ID)
        .unwrap_or_else(|| format!("{topic}/{partition}/{offset}"));
    CommandRecord {
        command: Command {
            id: id.clone(),
            aggregate: String::from_utf8_lossy(batch.key(i)).into_owned(),
            name: header_str(batch, i, headers::COMMAND).unwrap_or_default(),
            data: batch.value(i).to_vec(),
        },
        id,
        expected_version: header_str(batch, i, headers::EXPECTED_VERSION)
            .and_then(|v| v.parse().ok()),
        reply_topic: header_str(batch, i, headers::REPLY_TOPIC).filter(|t| !t.is_empty()),
    }
}

/// The partition of reply topic `topic` for the reply to command `id`.
/// The topic is created on first use, with as many partitions as the
/// commands topic, and its (empty) end is recorded as committed before
/// any reply can be appended, so recovery after a crash cuts an
/// uncommitted first reply instead of adopting it.
fn reply_partition(ctx: &TaskCtx, topic: &str, id: &str) -> Result<u32, TaskError> {
    let log = ctx.log();
    match log.partition_for(topic, id.as_bytes()) {
        Err(LogError::UnknownTopic(_)) => {}
        found => return Ok(found?),
    }
    {
        // No step of this service is between its append and its commit.
        let _serial = ctx.proc.commit_lock.lock();
        let partitions = log.topic(&ctx.topic)?.partitions.len() as u32;
        super::shared::create_topic(log, topic, partitions)
            .map_err(|e| TaskError::Infra(e.to_string()))?;
        let recorded = ctx.shared.store.output_ends(&ctx.proc.name)?;
        let mut baseline = Vec::new();
        for p in log.topic(topic)?.partitions {
            if !recorded
                .iter()
                .any(|r| r.topic == topic && r.partition == p.partition)
            {
                baseline.push(PartitionPos {
                    topic: topic.to_string(),
                    partition: p.partition,
                    offset: log.written_end(topic, p.partition)?,
                });
            }
        }
        ctx.shared
            .store
            .set_output_ends(&ctx.proc.name, &baseline)?;
    }
    Ok(log.partition_for(topic, id.as_bytes())?)
}

/// Events and the state after them, or the plugin's rejection.
type Decided = Result<(Vec<Event>, Vec<u8>), crate::runtime::Rejection>;

/// The records of `events` that a command `id` caused on `aggregate` at
/// `version`, as the events topic holds them.
fn event_records(
    aggregate: &str,
    events: &[Event],
    version: u64,
    id: &str,
    timestamp: i64,
) -> Vec<Record> {
    events
        .iter()
        .enumerate()
        .map(|(n, e)| Record {
            key: aggregate.as_bytes().to_vec(),
            value: e.data.clone(),
            headers: vec![
                (headers::EVENT.into(), e.name.as_bytes().to_vec()),
                (
                    headers::VERSION.into(),
                    (version + 1 + n as u64).to_string().into_bytes(),
                ),
                (headers::COMMAND_ID.into(), id.as_bytes().to_vec()),
            ],
            timestamp,
        })
        .collect()
}

pub struct CommandWorker {
    instance: CommandHandlerInstance,
    /// Latest state of aggregates this task owns (only ever ahead of the
    /// store inside a step; dropped on any error).
    cache: HashMap<String, AggregateSnapshot>,
}

const CACHE_LIMIT: usize = 100_000;

impl CommandWorker {
    pub fn new(ctx: &TaskCtx) -> Result<Self, EngineError> {
        let limits = ctx.manifest.limits(&ctx.shared.runtime.default_limits());
        let instance = ctx
            .plugin
            .command_handler(&ctx.proc.name, limits, &ctx.manifest.config_json())
            .map_err(|e| EngineError::Plugin(e.to_string()))?;
        Ok(CommandWorker {
            instance,
            cache: HashMap::new(),
        })
    }

    /// The aggregate's current state, rebuilt when made by another build.
    fn load(&mut self, ctx: &TaskCtx, aggregate: &str) -> Result<AggregateSnapshot, TaskError> {
        if let Some(s) = self.cache.get(aggregate) {
            return Ok(s.clone());
        }
        let digest = ctx.plugin.digest();
        let snap = ctx
            .shared
            .store
            .aggregate(&ctx.proc.name, aggregate)?
            .unwrap_or_default();
        let snap = if snap.version > 0 && snap.plugin_sha256 != digest {
            self.rebuild(ctx, aggregate, snap.version)?
        } else {
            AggregateSnapshot {
                plugin_sha256: digest.to_string(),
                ..snap
            }
        };
        if self.cache.len() >= CACHE_LIMIT {
            self.cache.clear();
        }
        self.cache.insert(aggregate.to_string(), snap.clone());
        Ok(snap)
    }

    /// Fold the aggregate's events (its events-topic partition, filtered by
    /// key) with this build's `evolve`, up to `version` events.
    fn rebuild(
        &mut self,
        ctx: &TaskCtx,
        aggregate: &str,
        version: u64,
    ) -> Result<AggregateSnapshot, TaskError> {
        let topic = &ctx.manifest.outputs[0];
        let log = ctx.log();
        let partition = log.partition_for(topic, aggregate.as_bytes())?;
        let end = log.end_offset(topic, partition)?;
        let mut offset = log.start_offset(topic, partition)?;
        let mut state = Vec::new();
        let mut seen = 0u64;
        while offset < end && seen < version {
            let batch = log.read(topic, partition, offset, 1000, 4 << 20)?;
            if batch.is_empty() {
                break;
            }
            let mut events = Vec::new();
            for i in 0..batch.len() {
                if batch.key(i) == aggregate.as_bytes() && seen + (events.len() as u64) < version {
                    events.push(Event {
                        name: header_str(&batch, i, headers::EVENT).unwrap_or_default(),
                        data: batch.value(i).to_vec(),
                    });
                }
            }
            if !events.is_empty() {
                seen += events.len() as u64;
                self.instance.set_event_time(batch.event_time());
                state = self.instance.evolve(&state, &events).map_err(|e| {
                    TaskError::Infra(format!("rebuilding {aggregate} with evolve failed: {e}"))
                })?;
            }
            offset = batch.offsets.last().map_or(end, |o| o + 1);
        }
        Ok(AggregateSnapshot {
            version: seen,
            plugin_sha256: ctx.plugin.digest().to_string(),
            state,
        })
    }

    /// decide + evolve: the events and the state after them. No effect
    /// outside the plugin, so the failure policy may call it again.
    fn decide(&mut self, command: &Command, state: &[u8]) -> Result<Decided, CallError> {
        match self.instance.decide(command, state)? {
            Ok(events) if events.is_empty() => Ok(Ok((events, state.to_vec()))),
            Ok(events) => {
                let next = self.instance.evolve(state, &events)?;
                Ok(Ok((events, next)))
            }
            Err(rejection) => Ok(Err(rejection)),
        }
    }
}

impl Worker for CommandWorker {
    fn handle(&mut self, ctx: &TaskCtx, batch: &RecordBatch) -> Result<u64, TaskError> {
        let next = batch.offsets.last().map_or(0, |o| o + 1);
        let service = ctx.proc.name.clone();
        let events_topic = ctx.manifest.outputs[0].clone();
        let mut outputs = Outputs::new();
        let mut dirty: BTreeMap<String, AggregateSnapshot> = BTreeMap::new();
        // (id, outcome, reply topic, fingerprint) per command handled here.
        let mut results: Vec<(String, CommandOutcome, Option<String>, String)> = Vec::new();
        let mut failed = Vec::new();
        let mut next = next;
        let mut stopped = None;
        for i in 0..batch.len() {
            let rec = decode_command(&ctx.topic, ctx.partition, batch, i);
            if results.iter().any(|(id, ..)| *id == rec.id)
                || ctx
                    .shared
                    .store
                    .command_result(&service, &rec.id)?
                    .is_some()
            {
                continue; // handled before: its first result stands
            }
            let fingerprint = rec.fingerprint();
            let aggregate = rec.command.aggregate.clone();
            let snap = self.load(ctx, &aggregate)?;
            if let Some(expected) = rec.expected_version
                && expected != snap.version
            {
                results.push((
                    rec.id,
                    CommandOutcome::Conflict {
                        expected,
                        actual: snap.version,
                    },
                    rec.reply_topic,
                    fingerprint,
                ));
                continue;
            }
            // The plugin's clock reads the command's time (see the sandbox).
            self.instance.set_event_time(batch.timestamps[i]);
            // The failure policy of every processor, for this one command.
            // One command at a time: nothing to cut.
            let mut decided = with_policy(ctx, &slice(batch, i..i + 1), |_| 0, &mut |_| {
                let decided = self.decide(&rec.command, &snap.state)?;
                let records = match &decided {
                    Ok((events, _)) => {
                        let records = event_records(
                            &aggregate,
                            events,
                            snap.version,
                            &rec.id,
                            batch.timestamps[i],
                        );
                        check_output_sizes(ctx, &records)?;
                        records
                    }
                    Err(_) => Vec::new(),
                };
                Ok((decided, records))
            })?;
            if let Some((offset, reason)) = decided.stopped.take() {
                // Commit what came before; stop at this command.
                next = offset;
                stopped = Some(reason);
                break;
            }
            let outcome = match decided.done.pop() {
                Some((Ok((events, state)), records)) => {
                    let partition = ctx
                        .log()
                        .partition_for(&events_topic, aggregate.as_bytes())?;
                    outputs
                        .entry((events_topic.clone(), partition))
                        .or_default()
                        .extend(records);
                    let version = snap.version + events.len() as u64;
                    let updated = AggregateSnapshot {
                        version,
                        plugin_sha256: snap.plugin_sha256.clone(),
                        state,
                    };
                    self.cache.insert(aggregate.clone(), updated.clone());
                    dirty.insert(aggregate, updated);
                    CommandOutcome::Applied { events, version }
                }
                Some((Err(rejection), _)) => CommandOutcome::Rejected {
                    code: rejection.code,
                    message: rejection.message,
                },
                // Dead-lettered or skipped: the command still gets a result.
                None => CommandOutcome::Rejected {
                    code: "handler-failed".into(),
                    message: decided
                        .failed
                        .iter()
                        .chain(&decided.skipped)
                        .map(|f| f.error.clone())
                        .next()
                        .unwrap_or_default(),
                },
            };
            failed.append(&mut decided.failed);
            results.push((rec.id, outcome, rec.reply_topic, fingerprint));
        }
        add_dead_letters(ctx, &failed, &mut outputs);
        let mut set = CommitSet::new(ctx.consumer.clone());
        set.checkpoints.push(PartitionPos {
            topic: ctx.topic.clone(),
            partition: ctx.partition,
            offset: next,
        });
        set.aggregates = dirty
            .into_iter()
            .map(|(a, s)| (service.clone(), a, s))
            .collect();
        let mut stored = Vec::with_capacity(results.len());
        for (id, outcome, _, fingerprint) in &results {
            let result = StoredResult {
                outcome: outcome.clone(),
                fingerprint: Some(fingerprint.clone()),
            };
            let bytes = serde_json::to_vec(&result).map_err(|e| TaskError::Infra(e.to_string()))?;
            set.command_results
                .push((service.clone(), id.clone(), bytes));
            stored.push((id.clone(), result));
        }
        // Replies are outputs of this step: they commit with it, exactly once.
        for (id, outcome, reply, _) in &results {
            let Some(topic) = reply else { continue };
            if !ownership::is_reply_topic(&service, topic) {
                // Only a command produced straight into the commands topic
                // can get here: a submit checks its reply topic.
                ctx.note_error(
                    format!(
                        "command {id} names reply topic {topic:?}, which is not a reply topic of {service}; no reply written"
                    ),
                    None,
                );
                continue;
            }
            let partition = reply_partition(ctx, topic, id)?;
            outputs
                .entry((topic.clone(), partition))
                .or_default()
                .push(Record {
                    key: id.as_bytes().to_vec(),
                    value: outcome.to_reply_json(id).to_string().into_bytes(),
                    headers: vec![(headers::CORRELATION_ID.into(), id.as_bytes().to_vec())],
                    timestamp: super::shared::now_ms(),
                });
        }
        let count = outputs.values().map(Vec::len).sum::<usize>()
            + set.aggregates.len()
            + set.command_results.len();
        if ctx.cluster.is_some() && count > MAX_STEP_OUTPUTS {
            // One commit holds a bounded number of messages. Nothing of this
            // batch is committed, but the cache holds its states: forget them.
            self.cache.clear();
            if batch.len() == 1 {
                return Err(TaskError::Infra(format!(
                    "one command makes {count} events, replies and state entries; in cluster mode a commit holds at most {MAX_STEP_OUTPUTS}"
                )));
            }
            let half = batch.len() / 2;
            let first = self.handle(ctx, &slice(batch, 0..half))?;
            if first != batch.offsets[half] {
                return Ok(first); // cut short (a budget or a stop): go on from there
            }
            return self.handle(ctx, &slice(batch, half..batch.len()));
        }
        commit_step(ctx, &outputs, &mut set)?;
        for (id, result) in stored {
            ctx.shared.notify_result(&service, &id, result);
        }
        match stopped {
            Some(reason) => Err(TaskError::PolicyStop(reason)),
            None => Ok(next),
        }
    }

    fn flush(&mut self, _ctx: &TaskCtx) -> Result<(), TaskError> {
        Ok(())
    }

    fn reset_cache(&mut self) {
        self.cache.clear();
    }
}
