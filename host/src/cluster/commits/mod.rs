//! A processor's commit stream on JetStream: where a processor partition's
//! steps commit atomically in cluster mode, fenced against a previous owner.
//!
//! One stream per processor, `<ns>_c_<processor>`, keeping the last message
//! per subject. Per partition `p` it holds
//!
//! - `<ns>.c.<processor>.<p>.ckpt` — the input position (opaque bytes) and,
//!   in a header, the number of the partition's next output;
//! - `<ns>.c.<processor>.<p>.s.<key token>` — one state entry (key and value in
//!   the payload; a delete is a tombstone);
//! - `<ns>.c.<processor>.<p>.o.<n>` — output `n` of the partition, committed
//!   but not yet forwarded to its topic (the outbox).
//!
//! # Promises
//!
//! - [`Owner::commit`] writes a step's outputs, state changes and checkpoint
//!   as one JetStream atomic batch: all of it or none of it.
//! - **Fencing**: [`CommitStream::claim`] rewrites the checkpoint, and every
//!   commit's checkpoint message expects the checkpoint's last sequence to be
//!   the one its owner wrote. Once another host claimed the partition, the
//!   previous owner's commits fail with [`CommitError::Fenced`] and change
//!   nothing.
//! - A claim returns everything committed: the checkpoint, the current state
//!   and the outputs not yet forwarded, in commit order.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, stream};
use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use jetstream_extra::batch_publish::BatchPublishExt;

use crate::batch::{Record, RecordBatch};
use crate::log::jetstream::{codec, names};
use crate::nats::{Nats, NatsError};

/// The most messages one commit may hold (JetStream's atomic batch limit).
pub const MAX_COMMIT_MESSAGES: usize = 1000;

const EXPECTED_SUBJECT_SEQ: &str = "Nats-Expected-Last-Subject-Sequence";
const OUT_TOPIC: &str = "weir-out-topic";
const OUT_PARTITION: &str = "weir-out-partition";
/// On the checkpoint: the number the partition's next output gets. Output
/// numbers name outputs for de-duplication, so they are never reused, even
/// once the outbox is empty.
const NEXT_OUT: &str = "weir-next-out";

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// Another host claimed the partition since this owner did.
    #[error("partition {partition} of {processor} was claimed by another host")]
    Fenced { processor: String, partition: u32 },
    #[error("a commit of {0} messages exceeds the limit of {MAX_COMMIT_MESSAGES}")]
    TooLarge(usize),
    /// A takeover found no checkpoint where one must be (never trusted as
    /// "start afresh": a stream recovering from a failover may answer so
    /// for a moment). Nothing was written; retry.
    #[error("partition {partition} of {processor} shows no checkpoint yet; retrying")]
    NoCheckpoint { processor: String, partition: u32 },
    /// A stored message is not what this module writes.
    #[error("commit stream {stream}: {reason}")]
    Corrupt { stream: String, reason: String },
    #[error(transparent)]
    Nats(#[from] NatsError),
}

/// One output of a step, to be forwarded to `topic`/`partition`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub topic: String,
    pub partition: u32,
    pub record: Record,
}

/// A committed output waiting to be forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// Its number within the partition (grows with every commit).
    pub n: u64,
    /// Its sequence in the commit stream.
    pub sequence: u64,
    /// When it was committed (JetStream's clock), if read back by a claim.
    pub committed: Option<time::OffsetDateTime>,
    pub output: Output,
}

/// What one step commits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Step {
    pub outputs: Vec<Output>,
    /// Key → new value, or `None` to delete it.
    pub state: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// The input position after this step.
    pub checkpoint: Vec<u8>,
}

/// A processor's commit stream.
pub struct CommitStream {
    nats: Arc<Nats>,
    processor: String,
    stream: String,
    prefix: String,
}

/// The owner of one partition, from its claim on.
pub struct Owner {
    pub partition: u32,
    /// The checkpoint as of the claim / the last commit.
    pub checkpoint: Option<Vec<u8>>,
    /// The state as claimed (key → value), for the new owner to take:
    /// commits do not keep it (the owner's copy of the state is its host's
    /// store, `processor::state_copies`), so a unit's state is not held in
    /// memory while it runs.
    pub state: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Committed outputs not yet forwarded, in order.
    pub outbox: Vec<Pending>,
    /// Sequence of the checkpoint message this owner wrote last.
    fence: u64,
    next_out: u64,
}

fn request(what: &str, e: impl std::fmt::Display) -> CommitError {
    CommitError::Nats(NatsError::request(what, e))
}

impl CommitStream {
    /// Open (creating if needed) the commit stream of `processor`.
    pub fn open(nats: Arc<Nats>, processor: &str) -> Result<CommitStream, CommitError> {
        let ns = nats.namespace().to_string();
        // Processor names are [a-z0-9._-]: '.' cannot be in a stream name or a
        // single subject token, '=' cannot be in a processor name.
        let token = processor.replace('.', "=");
        let stream = format!("{ns}_c_{token}");
        let prefix = format!("{ns}.c.{token}");
        let config = stream::Config {
            name: stream.clone(),
            description: Some(format!("weir: commits of processor {processor}")),
            subjects: vec![format!("{prefix}.>")],
            num_replicas: nats.replicas(),
            max_messages_per_subject: 1,
            max_messages: -1,
            max_bytes: -1,
            allow_direct: true,
            allow_atomic_publish: true,
            ..Default::default()
        };
        let js = nats.js().clone();
        let what = format!("the commit stream {stream}");
        let probe = format!("{prefix}.probe");
        nats.run(async move {
            crate::nats::making(&what, || {
                let (js, config, probe) = (js.clone(), config.clone(), probe.clone());
                async move {
                    let stream = js
                        .get_or_create_stream(config)
                        .await
                        .map_err(|e| e.to_string())?;
                    // A stream just made (or made again after a delete) does
                    // not answer reads until it has a leader.
                    match stream.get_last_raw_message_by_subject(&probe).await {
                        Ok(_) => Ok(()),
                        Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {
                            Ok(())
                        }
                        Err(e) => Err(e.to_string()),
                    }
                }
            })
            .await
        })??;
        Ok(CommitStream {
            nats,
            processor: processor.to_string(),
            stream,
            prefix,
        })
    }

    /// The start of the message ids of `partition`'s outputs (`<ns>/<processor>/<p>/`);
    /// output `n` is this followed by `n`.
    pub fn output_id_prefix(&self, partition: u32) -> String {
        format!("{}/{}/{partition}/", self.nats.namespace(), self.processor)
    }

    fn subject(&self, partition: u32, rest: &str) -> String {
        format!("{}.{partition}.{rest}", self.prefix)
    }

    /// Take over `partition`, which has committed before: fence every
    /// previous owner out, then read what it committed. Fails with `Fenced`
    /// if another host claims it at the same moment, and with
    /// `NoCheckpoint` (writing nothing) if no checkpoint shows.
    pub fn claim(&self, partition: u32) -> Result<Owner, CommitError> {
        self.take(partition, false)
    }

    /// Claim `partition` of a new processor, which may never have committed
    /// (its owner then starts without a checkpoint).
    pub fn start(&self, partition: u32) -> Result<Owner, CommitError> {
        self.take(partition, true)
    }

    fn take(&self, partition: u32, fresh: bool) -> Result<Owner, CommitError> {
        let js = self.nats.js().clone();
        let stream_name = self.stream.clone();
        let ckpt = self.subject(partition, "ckpt");
        let state_filter = self.subject(partition, "s.>");
        let out_filter = self.subject(partition, "o.>");
        let fenced = CommitError::Fenced {
            processor: self.processor.clone(),
            partition,
        };
        let no_checkpoint = CommitError::NoCheckpoint {
            processor: self.processor.clone(),
            partition,
        };
        let loaded = self.nats.run(async move {
            let stream = js
                .get_stream_no_info(&stream_name)
                .await
                .map_err(|e| request("opening the commit stream", e))?;
            // The leader's view (a raw get), not a replica's.
            let (last_seq, checkpoint, next_out) = match stream
                .get_last_raw_message_by_subject(&ckpt)
                .await
            {
                Ok(m) => {
                    let next = m
                        .headers
                        .get(NEXT_OUT)
                        .and_then(|v| v.as_str().parse().ok());
                    (m.sequence, Some(m.payload.to_vec()), next.unwrap_or(0u64))
                }
                Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound && fresh => {
                    (0, None, 0)
                }
                Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {
                    return Err(no_checkpoint);
                }
                Err(e) => return Err(request("reading the checkpoint", e)),
            };
            let mut headers = HeaderMap::new();
            headers.insert(EXPECTED_SUBJECT_SEQ, last_seq.to_string().as_str());
            headers.insert(NEXT_OUT, next_out.to_string().as_str());
            let payload = Bytes::from(checkpoint.clone().unwrap_or_default());
            let ack = js
                .publish_with_headers(ckpt, headers, payload)
                .await
                .map_err(|e| request("claiming the partition", e))?
                .await;
            let fence = match ack {
                Ok(ack) => ack.sequence,
                Err(e) if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence => {
                    return Err(fenced);
                }
                Err(e) => return Err(request("claiming the partition", e)),
            };
            let state = read_all(
                &stream,
                state_filter,
                consumer::DeliverPolicy::LastPerSubject,
            )
            .await?;
            let outbox = read_all(&stream, out_filter, consumer::DeliverPolicy::All).await?;
            Ok((fence, checkpoint, next_out, state, outbox))
        })??;
        let (fence, checkpoint, next_out, state_msgs, out_msgs) = loaded;
        let corrupt = |reason: String| CommitError::Corrupt {
            stream: self.stream.clone(),
            reason,
        };
        let mut state = BTreeMap::new();
        for m in state_msgs {
            match decode_state(&m.payload) {
                Some((key, Some(value))) => {
                    state.insert(key, value);
                }
                Some((_, None)) => {}
                None => {
                    return Err(corrupt(format!(
                        "state message {} is not a state entry",
                        m.sequence
                    )));
                }
            }
        }
        let out_prefix = self.subject(partition, "o.");
        let mut outbox = Vec::with_capacity(out_msgs.len());
        for m in out_msgs {
            let n = m
                .subject
                .strip_prefix(out_prefix.as_str())
                .and_then(|n| n.parse::<u64>().ok());
            let output = decode_output(&m);
            match (n, output) {
                (Some(n), Some(output)) => outbox.push(Pending {
                    n,
                    sequence: m.sequence,
                    committed: Some(m.time),
                    output,
                }),
                _ => {
                    return Err(corrupt(format!(
                        "outbox message {} is not an output",
                        m.sequence
                    )));
                }
            }
        }
        outbox.sort_by_key(|p| p.n);
        let next_out = outbox.last().map_or(next_out, |p| next_out.max(p.n + 1));
        Ok(Owner {
            partition,
            checkpoint: checkpoint.filter(|c| !c.is_empty()),
            state,
            outbox,
            fence,
            next_out,
        })
    }

    /// Commit `step` for `owner`'s partition: outputs, state and checkpoint
    /// at once, or nothing (and `Fenced` if another host claimed it).
    pub fn commit(&self, owner: &mut Owner, step: Step) -> Result<(), CommitError> {
        let count = step.outputs.len() + step.state.len() + 1;
        if count > MAX_COMMIT_MESSAGES {
            return Err(CommitError::TooLarge(count));
        }
        let p = owner.partition;
        let mut messages = Vec::with_capacity(count);
        let mut pending = Vec::with_capacity(step.outputs.len());
        for (i, output) in step.outputs.into_iter().enumerate() {
            let n = owner.next_out + i as u64;
            let mut headers = HeaderMap::new();
            headers.insert(OUT_TOPIC, output.topic.as_str());
            headers.insert(OUT_PARTITION, output.partition.to_string().as_str());
            let one = RecordBatch::from_records(0, [&output.record]);
            messages.push(jetstream::message::OutboundMessage {
                subject: self.subject(p, &format!("o.{n}")).into(),
                payload: codec::encode(&one, 0),
                headers: Some(headers),
            });
            pending.push((n, output));
        }
        for (key, value) in &step.state {
            messages.push(jetstream::message::OutboundMessage {
                subject: self
                    .subject(p, &format!("s.{}", names::key_token(key)))
                    .into(),
                payload: encode_state(key, value.as_deref()),
                headers: None,
            });
        }
        let next_out = owner.next_out + pending.len() as u64;
        let mut headers = HeaderMap::new();
        headers.insert(EXPECTED_SUBJECT_SEQ, owner.fence.to_string().as_str());
        headers.insert(NEXT_OUT, next_out.to_string().as_str());
        messages.push(jetstream::message::OutboundMessage {
            subject: self.subject(p, "ckpt").into(),
            payload: Bytes::from(step.checkpoint.clone()),
            headers: Some(headers),
        });
        let js = self.nats.js().clone();
        let last = self
            .nats
            .run(async move { publish_atomic(&js, messages).await })?;
        let last = match last {
            Ok(seq) => seq,
            Err(e) => {
                // Whatever the error says, the partition's checkpoint tells
                // whether someone else owns it now.
                return Err(match self.checkpoint_sequence(p)? {
                    Some(seq) if seq != owner.fence => CommitError::Fenced {
                        processor: self.processor.clone(),
                        partition: p,
                    },
                    _ => request("committing", e),
                });
            }
        };
        // The batch's sequences are consecutive and end at `last`.
        let first = last + 1 - count as u64;
        for (i, (n, output)) in pending.into_iter().enumerate() {
            owner.outbox.push(Pending {
                n,
                sequence: first + i as u64,
                committed: None,
                output,
            });
        }
        owner.next_out = next_out;
        owner.checkpoint = Some(step.checkpoint);
        owner.fence = last;
        Ok(())
    }

    /// The partitions that have a checkpoint, in order.
    pub fn partitions(&self) -> Result<Vec<u32>, CommitError> {
        let js = self.nats.js().clone();
        let stream_name = self.stream.clone();
        let filter = format!("{}.*.ckpt", self.prefix);
        let subjects = self.nats.run(async move {
            let stream = js
                .get_stream_no_info(&stream_name)
                .await
                .map_err(|e| request("opening the commit stream", e))?;
            let mut info = stream
                .info_with_subjects(filter)
                .await
                .map_err(|e| request("listing the commit stream's partitions", e))?;
            let mut out = Vec::new();
            while let Some(subject) = info.next().await {
                let (subject, _) =
                    subject.map_err(|e| request("listing the commit stream's partitions", e))?;
                out.push(subject);
            }
            Ok::<_, CommitError>(out)
        })??;
        let mut partitions: Vec<u32> = subjects
            .iter()
            .filter_map(|s| {
                s.strip_prefix(self.prefix.as_str())?
                    .strip_prefix('.')?
                    .strip_suffix(".ckpt")?
                    .parse()
                    .ok()
            })
            .collect();
        partitions.sort_unstable();
        Ok(partitions)
    }

    /// Remove every state entry of `owner`'s partition (a reset), after
    /// checking `owner` still owns it. Not atomic with a commit: callers
    /// make sure no other host runs the partition meanwhile.
    pub fn clear_state(&self, owner: &Owner) -> Result<(), CommitError> {
        self.check_owner(owner)?;
        self.purge(self.subject(owner.partition, "s.>"), None)
    }

    /// Remove the messages on `filter` (only those before sequence `before`, if given).
    fn purge(&self, filter: String, before: Option<u64>) -> Result<(), CommitError> {
        let js = self.nats.js().clone();
        let stream_name = self.stream.clone();
        self.nats.run(async move {
            let stream = js
                .get_stream_no_info(&stream_name)
                .await
                .map_err(|e| request("opening the commit stream", e))?;
            let purge = stream.purge().filter(filter);
            let purged = match before {
                Some(sequence) => purge.sequence(sequence).await,
                None => purge.await,
            };
            purged
                .map(drop)
                .map_err(|e| request("removing from the commit stream", e))
        })?
    }

    /// Remove the stream and everything in it (a deleted processor's).
    /// Removing one that is gone already is not an error.
    pub fn delete(&self) -> Result<(), CommitError> {
        let js = self.nats.js().clone();
        let stream_name = self.stream.clone();
        self.nats.run(async move {
            match js.delete_stream(&stream_name).await {
                Ok(_) => Ok(()),
                Err(e)
                    if matches!(
                        e.kind(),
                        jetstream::context::GetStreamErrorKind::JetStream(j)
                            if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
                    ) =>
                {
                    Ok(())
                }
                Err(e) => Err(request("removing the commit stream", e)),
            }
        })?
    }

    /// Forget the outbox up to and including output `n` (it was forwarded).
    pub fn forwarded(&self, owner: &mut Owner, n: u64) -> Result<(), CommitError> {
        let Some(upto) = owner
            .outbox
            .iter()
            .filter(|p| p.n <= n)
            .map(|p| p.sequence)
            .max()
        else {
            return Ok(());
        };
        self.purge(self.subject(owner.partition, "o.>"), Some(upto + 1))?;
        owner.outbox.retain(|p| p.n > n);
        Ok(())
    }

    /// Fail with `Fenced` unless `owner` still owns its partition (nobody
    /// claimed it since its claim or last commit).
    pub fn check_owner(&self, owner: &Owner) -> Result<(), CommitError> {
        match self.checkpoint_sequence(owner.partition)? {
            Some(seq) if seq == owner.fence => Ok(()),
            _ => Err(CommitError::Fenced {
                processor: self.processor.clone(),
                partition: owner.partition,
            }),
        }
    }

    /// The partition's committed checkpoint, as the leader has it (`None`
    /// before the first commit).
    pub fn checkpoint(&self, partition: u32) -> Result<Option<Vec<u8>>, CommitError> {
        Ok(self
            .last_checkpoint(partition)?
            .map(|(_, payload)| payload)
            .filter(|p| !p.is_empty()))
    }

    /// Sequence of the partition's checkpoint message, as the leader has it.
    fn checkpoint_sequence(&self, partition: u32) -> Result<Option<u64>, CommitError> {
        Ok(self.last_checkpoint(partition)?.map(|(seq, _)| seq))
    }

    /// The partition's checkpoint message (sequence, payload), from the leader.
    fn last_checkpoint(&self, partition: u32) -> Result<Option<(u64, Vec<u8>)>, CommitError> {
        let js = self.nats.js().clone();
        let stream_name = self.stream.clone();
        let ckpt = self.subject(partition, "ckpt");
        self.nats.run(async move {
            let stream = js
                .get_stream_no_info(&stream_name)
                .await
                .map_err(|e| request("opening the commit stream", e))?;
            match stream.get_last_raw_message_by_subject(&ckpt).await {
                Ok(m) => Ok(Some((m.sequence, m.payload.to_vec()))),
                Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
                Err(e) => Err(request("reading the checkpoint", e)),
            }
        })?
    }
}

/// What a [`StateFollower`] read.
#[derive(Debug, PartialEq, Eq)]
pub enum StateUpdate {
    /// The whole state as committed: it replaces any copy.
    Replace(BTreeMap<Vec<u8>, Vec<u8>>),
    /// Changes committed since the last update, in commit order (`None` = deleted).
    Changes(Vec<StateEntry>),
}

/// Follows one partition's state as committed, for a host that keeps a
/// copy of it: first the whole state, then every change, in commit order.
pub struct StateFollower {
    nats: Arc<Nats>,
    stream: String,
    messages: Option<consumer::pull::Ordered>,
    phase: Phase,
    /// The last sequence read (an ordered consumer that starts over
    /// delivers some again: they are skipped).
    last: u64,
}

enum Phase {
    /// Reading the whole state, up to the message at sequence `end` (0:
    /// read, or there is none).
    Whole {
        end: u64,
        state: BTreeMap<Vec<u8>, Vec<u8>>,
    },
    /// The whole state was handed over; changes follow.
    Changes,
}

impl Drop for StateFollower {
    fn drop(&mut self) {
        // The consumer's subscription is dropped inside the client's runtime.
        let _inside = self.nats.handle().enter();
        self.messages.take();
    }
}

impl CommitStream {
    /// Follow `partition`'s state from now on (see [`StateFollower`]).
    pub fn follow_state(&self, partition: u32) -> Result<StateFollower, CommitError> {
        let js = self.nats.js().clone();
        let stream_name = self.stream.clone();
        let filter = self.subject(partition, "s.>");
        let (messages, end) = self.nats.run(async move {
            let stream = js
                .get_stream_no_info(&stream_name)
                .await
                .map_err(|e| request("opening the commit stream", e))?;
            // The whole state ends at the last state message now (see `read_all`).
            let end = match stream.get_last_raw_message_by_subject(&filter).await {
                Ok(m) => m.sequence,
                Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => 0,
                Err(e) => return Err(request("following the commit stream", e)),
            };
            let c = stream
                .create_consumer(consumer::pull::OrderedConfig {
                    filter_subject: filter,
                    deliver_policy: consumer::DeliverPolicy::LastPerSubject,
                    ..Default::default()
                })
                .await
                .map_err(|e| request("following the commit stream", e))?;
            let messages = c
                .messages()
                .await
                .map_err(|e| request("following the commit stream", e))?;
            Ok::<_, CommitError>((messages, end))
        })??;
        Ok(StateFollower {
            nats: self.nats.clone(),
            stream: self.stream.clone(),
            messages: Some(messages),
            phase: Phase::Whole {
                end,
                state: BTreeMap::new(),
            },
            last: 0,
        })
    }
}

impl StateFollower {
    /// What arrived, waiting up to `wait` for it (at most `max` messages):
    /// first one `Replace`, once the whole state is read, then `Changes`.
    /// `None` if nothing new came (or the whole state is not read yet).
    /// After an error the follower is of no further use.
    pub fn poll(&mut self, wait: Duration, max: usize) -> Result<Option<StateUpdate>, CommitError> {
        let Some(mut messages) = self.messages.take() else {
            return Err(request(
                "following the commit stream",
                "an earlier read failed",
            ));
        };
        let read_any = !matches!(self.phase, Phase::Whole { end: 0, .. });
        let (messages, read) = self.nats.run(async move {
            let mut read = Vec::new();
            let mut wait = wait;
            while read_any && read.len() < max {
                match next_message(&mut messages, wait).await {
                    Ok(Some(m)) => read.push(m),
                    Ok(None) => break,
                    Err(e) => return (messages, Err(e)),
                }
                // What follows is usually delivered already.
                wait = Duration::from_millis(1);
            }
            (messages, Ok(read))
        })?;
        let read = read?;
        let mut changes = Vec::new();
        for m in read {
            if m.sequence <= self.last {
                continue;
            }
            self.last = m.sequence;
            let Some((key, value)) = decode_state(&m.payload) else {
                return Err(CommitError::Corrupt {
                    stream: self.stream.clone(),
                    reason: format!("state message {} is not a state entry", m.sequence),
                });
            };
            match &mut self.phase {
                Phase::Whole { end, state } => {
                    if m.sequence >= *end {
                        *end = 0;
                    }
                    match value {
                        Some(v) => state.insert(key, v),
                        None => state.remove(&key),
                    };
                }
                Phase::Changes => changes.push((key, value)),
            }
        }
        self.messages = Some(messages);
        Ok(match &mut self.phase {
            Phase::Whole { end: 0, state } => {
                let state = std::mem::take(state);
                self.phase = Phase::Changes;
                Some(StateUpdate::Replace(state))
            }
            Phase::Whole { .. } => None,
            Phase::Changes if changes.is_empty() => None,
            Phase::Changes => Some(StateUpdate::Changes(changes)),
        })
    }
}

/// Every message matching `filter` as of now, through an ordered consumer.
async fn read_all(
    stream: &stream::Stream<()>,
    filter: String,
    deliver_policy: consumer::DeliverPolicy,
) -> Result<Vec<jetstream::message::StreamMessage>, CommitError> {
    // Where "now" ends: the last message on the filter, as the leader has
    // it. (A consumer's `num_pending` is no end marker: it came short of
    // the state committed just before, now and then.)
    let end = match stream.get_last_raw_message_by_subject(&filter).await {
        Ok(m) => m.sequence,
        Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {
            return Ok(Vec::new());
        }
        Err(e) => return Err(request("reading the commit stream", e)),
    };
    let c = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: filter,
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|e| request("reading the commit stream", e))?;
    let mut messages = c
        .messages()
        .await
        .map_err(|e| request("reading the commit stream", e))?;
    let mut out = Vec::new();
    let mut last = 0;
    while last < end {
        let m = next_message(&mut messages, Duration::from_secs(10))
            .await?
            .ok_or_else(|| request("reading the commit stream", "stopped early"))?;
        // An ordered consumer may start over after a reset: what it
        // delivered already is skipped, not counted twice.
        if m.sequence > last {
            last = m.sequence;
            out.push(m);
        }
    }
    Ok(out)
}

/// The next message of an ordered consumer, or `None` if none came within `wait`.
async fn next_message(
    messages: &mut consumer::pull::Ordered,
    wait: Duration,
) -> Result<Option<jetstream::message::StreamMessage>, CommitError> {
    let m = match tokio::time::timeout(wait, messages.next()).await {
        Ok(Some(Ok(m))) => m,
        Ok(Some(Err(e))) => return Err(request("reading the commit stream", e)),
        Ok(None) => return Err(request("reading the commit stream", "the consumer ended")),
        Err(_) => return Ok(None),
    };
    let info = m
        .info()
        .map_err(|e| request("reading the commit stream", e))?;
    Ok(Some(jetstream::message::StreamMessage {
        subject: m.subject.clone(),
        sequence: info.stream_sequence,
        headers: m.headers.clone().unwrap_or_default(),
        payload: m.payload.clone(),
        time: info.published,
    }))
}

/// Publish `messages` as one atomic batch; the sequence of the last one.
async fn publish_atomic(
    js: &jetstream::Context,
    mut messages: Vec<jetstream::message::OutboundMessage>,
) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
    let Some(last) = messages.pop() else {
        return Err("an empty commit".into());
    };
    let mut batch = js.batch_publish().build();
    for m in messages {
        batch.add_message(m).await?;
    }
    Ok(batch.commit_message(last).await?.sequence)
}

/// `0` + key length + key + value for a put; `1` + key length + key for a delete.
fn encode_state(key: &[u8], value: Option<&[u8]>) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + key.len() + value.map_or(0, <[u8]>::len));
    out.put_u8(if value.is_some() { 0 } else { 1 });
    out.put_u32_le(key.len() as u32);
    out.put_slice(key);
    if let Some(v) = value {
        out.put_slice(v);
    }
    out.freeze()
}

/// A state key and its value (`None`: deleted).
pub type StateEntry = (Vec<u8>, Option<Vec<u8>>);

fn decode_state(payload: &[u8]) -> Option<StateEntry> {
    let (&tag, rest) = payload.split_first()?;
    let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let key = rest.get(4..4 + len)?.to_vec();
    let value = rest.get(4 + len..)?;
    match tag {
        0 => Some((key, Some(value.to_vec()))),
        1 if value.is_empty() => Some((key, None)),
        _ => None,
    }
}

fn decode_output(m: &jetstream::message::StreamMessage) -> Option<Output> {
    let topic = m.headers.get(OUT_TOPIC)?.as_str().to_string();
    let partition = m.headers.get(OUT_PARTITION)?.as_str().parse().ok()?;
    let mut batch = RecordBatch::default();
    codec::decode_into(&mut batch, 0, &m.payload).ok()?;
    Some(Output {
        topic,
        partition,
        record: batch.record(0),
    })
}

#[cfg(test)]
mod tests;
