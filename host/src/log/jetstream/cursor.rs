//! Sequential reads: each reader position keeps an ordered pull consumer
//! between reads, so a reader that goes on where it stopped (a tail, a
//! processor, a replay) streams messages instead of asking for each batch.
//!
//! A cursor is keyed by (stream, next offset): a read from that offset takes
//! it, reads, and puts it back under its new next offset. A read with no
//! cursor is answered by a batched direct get (no consumer to create), and
//! where it ended is remembered: a read that starts there is sequential, and
//! opens a cursor. So random reads never create consumers and sequential
//! ones stream from their second read on. Cursors and remembered ends idle
//! for [`IDLE`] are dropped (the server removes the consumers), and at most
//! [`MAX_CURSORS`] of each are kept.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use bytes::Bytes;
use futures::StreamExt;
use parking_lot::Mutex;

use super::OpError;

/// How long an unused cursor is kept.
pub const IDLE: Duration = Duration::from_secs(30);
/// The most cursors kept at once (per host).
pub const MAX_CURSORS: usize = 1024;
/// How long a read waits for a message the stream state says exists.
const ARRIVAL: Duration = Duration::from_secs(5);

pub(super) struct Cursor {
    messages: consumer::pull::Ordered,
    /// A message read past the last read's limits, first in line for the next.
    peeked: Option<jetstream::Message>,
    /// Whether the stream held nothing more after the last message read.
    drained: bool,
    used: Instant,
    /// It delivered out of order: never to be used again.
    pub broken: bool,
}

/// The idle cursors. A cursor holds a NATS subscription, whose drop must
/// happen inside the client's runtime: every drop here enters it.
pub(super) struct Cursors {
    idle: Mutex<HashMap<(String, u64), Cursor>>,
    /// Where recent reads without a cursor ended.
    ends: Mutex<HashMap<(String, u64), Instant>>,
    runtime: tokio::runtime::Handle,
}

impl Drop for Cursors {
    fn drop(&mut self) {
        let _inside = self.runtime.enter();
        self.idle.get_mut().clear();
    }
}

impl Cursors {
    pub fn new(runtime: tokio::runtime::Handle) -> Cursors {
        Cursors {
            idle: Mutex::new(HashMap::new()),
            ends: Mutex::new(HashMap::new()),
            runtime,
        }
    }

    /// Note that a read without a cursor ended at `next`.
    pub fn ended(&self, stream: String, next: u64) {
        let mut ends = self.ends.lock();
        ends.retain(|_, at| at.elapsed() < IDLE);
        if ends.len() >= MAX_CURSORS
            && let Some(oldest) = ends
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(k, _)| k.clone())
        {
            ends.remove(&oldest);
        }
        ends.insert((stream, next), Instant::now());
    }

    /// Whether a read from `from` goes on where an earlier one ended.
    pub fn continues(&self, stream: &str, from: u64) -> bool {
        self.ends
            .lock()
            .remove(&(stream.to_string(), from))
            .is_some_and(|at| at.elapsed() < IDLE)
    }

    pub fn take(&self, stream: &str, from: u64) -> Option<Cursor> {
        self.idle.lock().remove(&(stream.to_string(), from))
    }

    pub fn put(&self, stream: String, next: u64, cursor: Cursor) {
        let _inside = self.runtime.enter();
        let mut idle = self.idle.lock();
        idle.retain(|_, c| c.used.elapsed() < IDLE);
        if idle.len() >= MAX_CURSORS
            && let Some(oldest) = idle
                .iter()
                .min_by_key(|(_, c)| c.used)
                .map(|(k, _)| k.clone())
        {
            idle.remove(&oldest);
        }
        idle.insert((stream, next), cursor);
    }

    /// Forget every cursor of `stream` (its topic was deleted).
    pub fn drop_stream(&self, stream: &str) {
        let _inside = self.runtime.enter();
        self.idle.lock().retain(|(s, _), _| s != stream);
        self.ends.lock().retain(|(s, _), _| s != stream);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.idle.lock().len()
    }
}

/// Up to `wanted` messages from offset `from` by one batched direct get
/// (any replica answers), with [`read`]'s limits.
pub(super) async fn direct(
    js: &jetstream::Context,
    stream: &str,
    from: u64,
    wanted: usize,
    max_bytes: usize,
    end: u64,
) -> Result<Vec<(u64, Bytes)>, OpError> {
    use jetstream_extra::batch_fetch::BatchFetchExt;
    let mut fetched = js
        .get_batch(stream, wanted.min(super::MAX_APPEND_RECORDS))
        .sequence(from + 1)
        .max_bytes(max_bytes.max(1))
        .send()
        .await?;
    let mut out: Vec<(u64, Bytes)> = Vec::new();
    let mut bytes = 0usize;
    while let Some(m) = fetched.next().await {
        let m = m?;
        let size = m.payload.len();
        if m.sequence > end || out.len() >= wanted || (!out.is_empty() && bytes + size > max_bytes)
        {
            break;
        }
        bytes += size;
        out.push((m.sequence, m.payload));
    }
    Ok(out)
}

/// A cursor whose first message is the one at offset `from`.
pub(super) async fn open(
    js: &jetstream::Context,
    stream: &str,
    from: u64,
) -> Result<Cursor, OpError> {
    let s = js.get_stream_no_info(stream).await?;
    let c = s
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: from + 1,
            },
            ..Default::default()
        })
        .await?;
    Ok(Cursor {
        messages: c.messages().await?,
        peeked: None,
        drained: false,
        used: Instant::now(),
        broken: false,
    })
}

/// Up to `wanted` messages (at least one) of at most `max_bytes` payload
/// bytes (past it only for the first), none beyond sequence `end`:
/// `(sequence, payload)` in order, each after sequence `from` (offset
/// `from` is the next to read) and after the one before. A consumer that
/// delivers anything else is broken (seen: an ordered consumer starting
/// over at its first sequence after 1,000 deliveries): what came before it
/// is returned and the cursor marked [`Cursor::broken`], so the caller
/// drops it instead of handing a reader records it has read already.
pub(super) async fn read(
    cursor: &mut Cursor,
    from: u64,
    wanted: usize,
    max_bytes: usize,
    end: u64,
) -> Result<Vec<(u64, Bytes)>, OpError> {
    cursor.used = Instant::now();
    let mut out: Vec<(u64, Bytes)> = Vec::with_capacity(wanted.min(1024));
    let mut bytes = 0usize;
    while out.len() < wanted {
        let message = match cursor.peeked.take() {
            Some(m) => m,
            None => {
                if cursor.drained && !out.is_empty() {
                    break;
                }
                match tokio::time::timeout(ARRIVAL, cursor.messages.next()).await {
                    Ok(Some(Ok(m))) => m,
                    Ok(Some(Err(e))) => return Err(e.into()),
                    Ok(None) => return Err("the partition's consumer ended".into()),
                    // Records the stream state counted were removed since
                    // (retention, compaction): what arrived is the answer.
                    Err(_) if !out.is_empty() => break,
                    Err(_) => return Ok(out),
                }
            }
        };
        let (sequence, pending) = {
            let info = message.info()?;
            (info.stream_sequence, info.pending)
        };
        let after = out.last().map_or(from, |(s, _)| *s);
        if sequence <= after {
            tracing::warn!(
                sequence,
                after,
                "a reader's consumer went back; replacing it"
            );
            cursor.broken = true;
            return Ok(out);
        }
        let size = message.payload.len();
        if sequence > end || (!out.is_empty() && bytes + size > max_bytes) {
            cursor.peeked = Some(message);
            break;
        }
        cursor.drained = pending == 0;
        bytes += size;
        out.push((sequence, message.payload.clone()));
    }
    Ok(out)
}
