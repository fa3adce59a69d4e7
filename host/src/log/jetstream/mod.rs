//! The log on NATS JetStream: weir's cluster backend behind the same
//! [`EventLog`] boundary as the embedded log, so the HTTP API and the
//! processors do not know which one runs.
//!
//! # Mapping
//!
//! - **Topic directory**: a key-value bucket `<ns>_topics` maps each topic
//!   name to its configuration and *incarnation* (a UUID drawn at creation).
//!   Every host reads it, so a topic created through one host exists on all.
//! - **One stream per partition**, `<ns>_<incarnation>_<p>`, capturing the
//!   subject `<ns>.log.<incarnation>.<p>`, replicated `replicas` times (R3 on a
//!   three-node cluster). A partition's offsets are its stream's sequences
//!   minus one, so they are dense, only grow and are never assigned again —
//!   JetStream assigns them, whichever host appends.
//! - **Records**: one message per record; key, headers, timestamp and value
//!   travel in the payload (see `codec`). An append of several records is one
//!   JetStream *atomic batch* (all or nothing, consecutive offsets), at most
//!   [`MAX_APPEND_RECORDS`] records.
//! - **Retention** maps onto stream limits (`retention_ms` → `max_age`,
//!   `retention_bytes` → `max_bytes`, oldest first); **compaction** puts each
//!   key on its own subject (`….<p>.<key token>`) with one message kept per
//!   subject, so a compacted partition keeps exactly the latest record per key
//!   at all times (offsets then have gaps, as in the embedded log). Tombstones
//!   (empty values) stay as their key's latest record. Segment settings and the
//!   fsync policy have no meaning here: durability is JetStream's (a record is
//!   acknowledged once a majority of its stream's replicas stored it).
//! - **Reads**: a reader that goes on where it stopped keeps an ordered pull
//!   consumer between reads (see `cursor`), so sequential reads stream.
//! - **Waiting** (`wait_for`, `watch_end`): one ordered, headers-only push
//!   consumer per watched partition and host follows the stream's new
//!   sequences; nothing polls.
//!
//! # Promises and differences from the embedded log
//!
//! - Create: the streams first, then the directory entry (a compare-and-set
//!   create), so two hosts creating one topic at once yield one topic and one
//!   `TopicExists`. Delete: the directory entry first (the topic is gone for
//!   every host), then the streams. A crash between the two steps leaves
//!   unreferenced streams behind, never a half-visible topic.
//! - Appends are visible on acknowledgement. `append_deferred` therefore
//!   publishes at once, `publish` is a no-op and `truncate` cannot cut records
//!   (JetStream has no tail truncation; it refuses with `Unsupported`):
//!   processors in cluster mode commit by another protocol (issue #11).
//! - Every call blocks its caller on a request to JetStream (default timeout
//!   5 s); an unreachable cluster surfaces as `LogError::Backend`, a topic
//!   deleted through another host as `UnknownTopic`.

pub(crate) mod codec;
mod cursor;
pub(crate) mod names;

#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, stream};
use futures::StreamExt;
use jetstream_extra::batch_fetch::BatchFetchExt;
use jetstream_extra::batch_publish::BatchPublishExt;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::partitioner::{RoundRobin, partition_for_key};
use super::{
    AppendAck, EventLog, LogError, PartitionInfo, Record, RecordBatch, Result, TopicConfig,
    TopicInfo, TopicMeta, validate_topic_name,
};

use crate::nats::NatsError;
pub use crate::nats::{Nats, NatsConfig};

/// The most records one append may hold: JetStream's atomic batch limit.
pub const MAX_APPEND_RECORDS: usize = 1000;

/// The most records one read returns.
pub const MAX_READ_RECORDS: usize = 10_000;

/// JetStream's de-duplication header.
/// How long creating a topic waits for JetStream to find peers for its
/// streams' replicas (a cluster just formed, a node restarting).
const PLACEMENT_WAIT: Duration = Duration::from_secs(10);

const MSG_ID: &str = "Nats-Msg-Id";

/// Room left in a message for the headers JetStream's batch protocol adds.
const HEADER_ROOM: usize = 512;

/// A topic as the directory bucket stores it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TopicEntry {
    name: String,
    incarnation: String,
    config: TopicConfig,
}

/// A directory entry as this host knows it.
struct KnownTopic {
    entry: TopicEntry,
    /// The directory revision that created it (delete expects it).
    revision: u64,
    round_robin: RoundRobin,
}

/// A failed JetStream request, before it is known whether the topic it
/// concerned still exists.
pub(super) type OpError = Box<dyn std::error::Error + Send + Sync>;

fn backend(what: &str, e: impl std::fmt::Display) -> LogError {
    LogError::Backend(format!("{what}: {e}"))
}

impl From<NatsError> for LogError {
    fn from(e: NatsError) -> Self {
        match e {
            NatsError::Config(m) => LogError::InvalidConfig(m),
            NatsError::Request(m) => LogError::Backend(m),
        }
    }
}

/// The JetStream backend. Cheap to share as `Arc<dyn EventLog>`; its
/// blocking methods may be called from any thread (see [`Nats::run`]).
pub struct JetStreamLog {
    /// Open ordered consumers of sequential readers (dropped before `nats`).
    cursors: Arc<cursor::Cursors>,
    nats: Arc<Nats>,
    js: jetstream::Context,
    ns: String,
    replicas: usize,
    directory: kv::Store,
    topics: RwLock<HashMap<String, Arc<KnownTopic>>>,
    /// Visible ends of watched partitions, by stream name.
    watches: Arc<Mutex<HashMap<String, watch::Sender<u64>>>>,
    max_payload: usize,
}

impl JetStreamLog {
    /// Connect to the cluster and open (or create) the topic directory.
    pub fn open(config: &NatsConfig) -> Result<JetStreamLog> {
        JetStreamLog::on(Arc::new(Nats::connect(config)?))
    }

    /// Open the topic directory over an existing connection.
    pub fn on(nats: Arc<Nats>) -> Result<JetStreamLog> {
        let ns = nats.namespace().to_string();
        let bucket = names::topic_bucket(&ns);
        let opener = nats.clone();
        let directory = nats.run(async move {
            opener
                .key_value(kv::Config {
                    bucket,
                    description: "weir: topic name -> configuration and incarnation".into(),
                    history: 1,
                    ..Default::default()
                })
                .await
        })??;
        Ok(JetStreamLog {
            cursors: Arc::new(cursor::Cursors::new(nats.handle())),
            js: nats.js().clone(),
            replicas: nats.replicas(),
            max_payload: nats.max_payload(),
            nats,
            ns,
            directory,
            topics: RwLock::new(HashMap::new()),
            watches: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// The connection this log uses (shared with cluster coordination).
    pub fn nats(&self) -> &Arc<Nats> {
        &self.nats
    }

    /// Run `fut` on the client's runtime and wait for it.
    fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        self.nats.run(fut)?
    }

    /// The topic as the directory holds it: from this host's cache, else
    /// fetched (another host may have created it a moment ago).
    fn known(&self, name: &str) -> Result<Arc<KnownTopic>> {
        if let Some(t) = self.topics.read().get(name) {
            return Ok(t.clone());
        }
        self.fetch(name)
    }

    /// Read the directory entry of `name`, replacing the cached one.
    fn fetch(&self, name: &str) -> Result<Arc<KnownTopic>> {
        validate_topic_name(name)?;
        let directory = self.directory.clone();
        let key = names::topic_key(name);
        let found = self.run(async move {
            directory
                .entry(key)
                .await
                .map_err(|e| backend("reading the topic directory", e))
        })?;
        let entry = match found {
            Some(e) if e.operation == kv::Operation::Put => e,
            _ => {
                self.topics.write().remove(name);
                return Err(LogError::UnknownTopic(name.to_string()));
            }
        };
        let parsed: TopicEntry = serde_json::from_slice(&entry.value).map_err(|e| {
            backend(
                &format!("the directory entry of topic {name:?} is not valid"),
                e,
            )
        })?;
        let known = Arc::new(KnownTopic {
            entry: parsed,
            revision: entry.revision,
            round_robin: RoundRobin::default(),
        });
        self.topics.write().insert(name.to_string(), known.clone());
        Ok(known)
    }

    /// The stream of one partition, checked against the topic's partitions.
    fn partition(&self, topic: &str, partition: u32) -> Result<(Arc<KnownTopic>, String)> {
        let known = self.known(topic)?;
        let partitions = known.entry.config.partitions;
        if partition >= partitions {
            return Err(LogError::InvalidPartition {
                topic: topic.to_string(),
                partition,
                partitions,
            });
        }
        let stream = names::stream_name(&self.ns, &known.entry.incarnation, partition);
        Ok((known, stream))
    }

    /// Run a request against a topic's streams. A failure is the topic's
    /// absence when the directory no longer holds this incarnation (deleted,
    /// perhaps re-created, through another host), else the backend's.
    fn on_topic<T: Send + 'static>(
        &self,
        known: &KnownTopic,
        what: &'static str,
        fut: impl Future<Output = std::result::Result<T, OpError>> + Send + 'static,
    ) -> Result<T> {
        match self.run(async move { Ok(fut.await) })? {
            Ok(v) => Ok(v),
            Err(e) => {
                let name = &known.entry.name;
                match self.fetch(name) {
                    Ok(now) if now.entry.incarnation == known.entry.incarnation => {
                        Err(backend(what, e))
                    }
                    Ok(_) | Err(LogError::UnknownTopic(_)) => {
                        Err(LogError::UnknownTopic(name.clone()))
                    }
                    Err(other) => Err(other),
                }
            }
        }
    }

    fn stream_config(&self, entry: &TopicEntry, partition: u32) -> stream::Config {
        let c = &entry.config;
        stream::Config {
            name: names::stream_name(&self.ns, &entry.incarnation, partition),
            description: Some(format!("weir topic {} partition {partition}", entry.name)),
            subjects: vec![names::stream_subject(
                &self.ns,
                &entry.incarnation,
                partition,
                c.compaction,
            )],
            num_replicas: self.replicas,
            max_age: Duration::from_millis(c.retention_ms.unwrap_or(0)),
            max_bytes: c
                .retention_bytes
                .map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX)),
            max_messages: -1,
            max_messages_per_subject: if c.compaction { 1 } else { -1 },
            discard: stream::DiscardPolicy::Old,
            allow_direct: true,
            allow_atomic_publish: true,
            ..Default::default()
        }
    }

    /// Stream state of every partition, fetched concurrently.
    fn partition_infos(&self, known: &Arc<KnownTopic>) -> Result<Vec<PartitionInfo>> {
        let js = self.js.clone();
        let streams: Vec<String> = (0..known.entry.config.partitions)
            .map(|p| names::stream_name(&self.ns, &known.entry.incarnation, p))
            .collect();
        self.on_topic(known, "reading stream state", async move {
            let infos =
                futures::future::join_all(streams.iter().map(|s| stream_state(&js, s))).await;
            let mut out = Vec::with_capacity(infos.len());
            for (p, info) in infos.into_iter().enumerate() {
                let (start, end, bytes) = info?;
                out.push(PartitionInfo {
                    partition: p as u32,
                    start_offset: start,
                    end_offset: end,
                    written_end: end,
                    size_bytes: bytes,
                });
            }
            Ok(out)
        })
    }

    fn info(&self, known: &Arc<KnownTopic>) -> Result<TopicInfo> {
        Ok(TopicInfo {
            name: known.entry.name.clone(),
            incarnation: known.entry.incarnation.clone(),
            config: known.entry.config.clone(),
            partitions: self.partition_infos(known)?,
        })
    }

    /// `(start, end)` offsets of one partition.
    fn bounds(&self, topic: &str, partition: u32) -> Result<(u64, u64)> {
        let (known, stream) = self.partition(topic, partition)?;
        let js = self.js.clone();
        let (start, end, _) = self.on_topic(&known, "reading stream state", async move {
            stream_state(&js, &stream).await
        })?;
        Ok((start, end))
    }

    fn append_messages(
        &self,
        topic: &str,
        partition: u32,
        batch: &RecordBatch,
    ) -> Result<AppendAck> {
        batch
            .validate()
            .map_err(|e| LogError::InvalidArgument(e.to_string()))?;
        let (known, stream) = self.partition(topic, partition)?;
        let count = batch.len();
        if count == 0 {
            let (_, end) = self.bounds(topic, partition)?;
            return Ok(AppendAck {
                base_offset: end,
                count: 0,
            });
        }
        if count > MAX_APPEND_RECORDS {
            return Err(LogError::TooManyRecords {
                count,
                max: MAX_APPEND_RECORDS,
            });
        }
        let compacted = known.entry.config.compaction;
        let base = names::partition_subject(&self.ns, &known.entry.incarnation, partition);
        let max = self.max_payload.saturating_sub(HEADER_ROOM);
        let mut messages = Vec::with_capacity(count);
        for i in 0..count {
            let payload = codec::encode(batch, i);
            if payload.len() > max {
                return Err(LogError::BatchTooLarge {
                    size: payload.len(),
                    max,
                });
            }
            messages.push(jetstream::message::OutboundMessage {
                subject: names::record_subject(&base, compacted, batch.key(i)).into(),
                payload,
                headers: None,
            });
        }
        let js = self.js.clone();
        let last_seq = self.on_topic(&known, "appending", async move {
            publish_all(&js, messages).await
        })?;
        let end = last_seq;
        if let Some(tx) = self.watches.lock().get(&stream) {
            tx.send_if_modified(|e| advance(e, end));
        }
        Ok(AppendAck {
            base_offset: end - count as u64,
            count: count as u32,
        })
    }

    /// Delete partition streams no topic refers to: what a crash between
    /// creating a topic's streams and recording it (or between removing its
    /// entry and its streams) leaves behind. Only streams older than
    /// `min_age` go, so a topic being created right now is never touched.
    /// Returns the streams deleted.
    pub fn sweep_orphans(&self, min_age: Duration) -> Result<Vec<String>> {
        let live: BTreeSet<String> = self.topics().into_iter().map(|t| t.incarnation).collect();
        let js = self.js.clone();
        let prefix = format!("{}_", self.ns);
        self.run(async move {
            let mut streams = js.streams();
            let mut orphans = Vec::new();
            let now = time::OffsetDateTime::now_utc();
            while let Some(info) = streams.next().await {
                let info = info.map_err(|e| backend("listing streams", e))?;
                let name = info.config.name.clone();
                let Some((incarnation, partition)) = name
                    .strip_prefix(prefix.as_str())
                    .and_then(|rest| rest.rsplit_once('_'))
                else {
                    continue;
                };
                let is_partition = incarnation.len() == 32
                    && incarnation.bytes().all(|b| b.is_ascii_hexdigit())
                    && partition.parse::<u32>().is_ok();
                let old = now - info.created >= min_age;
                if is_partition && old && !live.contains(incarnation) {
                    orphans.push(name);
                }
            }
            for name in &orphans {
                js.delete_stream(name)
                    .await
                    .map_err(|e| backend(&format!("deleting orphan stream {name}"), e))?;
            }
            Ok(orphans)
        })
    }

    /// Append one record under a message id: within the stream's
    /// de-duplication window JetStream stores it once per id, however often
    /// it is sent. Returns its offset (the first copy's, for a duplicate) and
    /// whether it was a duplicate. Cluster mode's outbox forwarding uses it.
    pub fn append_once(
        &self,
        topic: &str,
        partition: u32,
        id: &str,
        record: &Record,
    ) -> Result<(u64, bool)> {
        let (known, stream) = self.partition(topic, partition)?;
        let one = RecordBatch::from_records(0, [record]);
        let payload = codec::encode(&one, 0);
        let max = self.max_payload.saturating_sub(HEADER_ROOM);
        if payload.len() > max {
            return Err(LogError::BatchTooLarge {
                size: payload.len(),
                max,
            });
        }
        let base = names::partition_subject(&self.ns, &known.entry.incarnation, partition);
        let subject = names::record_subject(&base, known.entry.config.compaction, &record.key);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(MSG_ID, id);
        let js = self.js.clone();
        let ack = self.on_topic(&known, "appending", async move {
            Ok(js
                .publish_with_headers(subject, headers, payload)
                .await?
                .await?)
        })?;
        if let Some(tx) = self.watches.lock().get(&stream) {
            tx.send_if_modified(|e| advance(e, ack.sequence));
        }
        Ok((ack.sequence - 1, ack.duplicate))
    }

    /// The message ids starting with `prefix` of the records JetStream stored
    /// in a partition at or after `since` (its clock): what a writer that
    /// died already published, beyond any de-duplication window.
    pub fn ids_since(
        &self,
        topic: &str,
        partition: u32,
        since: time::OffsetDateTime,
        prefix: &str,
    ) -> Result<BTreeSet<String>> {
        let (known, stream) = self.partition(topic, partition)?;
        let (_, end) = self.bounds(topic, partition)?;
        let js = self.js.clone();
        let prefix = prefix.to_string();
        self.on_topic(&known, "reading message ids", async move {
            let mut ids = BTreeSet::new();
            let mut first = js.get_batch(&stream, 1).start_time(since).send().await?;
            let mut next = match first.next().await {
                Some(Ok(m)) => m.sequence,
                // Nothing stored since then.
                Some(Err(_)) | None => return Ok(ids),
            };
            while next <= end {
                let mut batch = js
                    .get_batch(&stream, MAX_APPEND_RECORDS)
                    .sequence(next)
                    .send()
                    .await?;
                let mut last = None;
                while let Some(m) = batch.next().await {
                    let m = m?;
                    if let Some(id) = m.headers.get(MSG_ID).map(|v| v.as_str())
                        && id.starts_with(prefix.as_str())
                    {
                        ids.insert(id.to_string());
                    }
                    last = Some(m.sequence);
                }
                match last {
                    Some(l) => next = l + 1,
                    None => break,
                }
            }
            Ok(ids)
        })
    }

    /// A watch of one partition's visible end, following its stream.
    fn watch(&self, topic: &str, partition: u32) -> Result<watch::Receiver<u64>> {
        let (known, stream) = self.partition(topic, partition)?;
        if let Some(tx) = self.watches.lock().get(&stream) {
            return Ok(tx.subscribe());
        }
        let (_, end) = self.bounds(topic, partition)?;
        let mut watches = self.watches.lock();
        if let Some(tx) = watches.get(&stream) {
            return Ok(tx.subscribe());
        }
        let (tx, rx) = watch::channel(end);
        watches.insert(stream.clone(), tx.clone());
        drop(watches);
        let js = self.js.clone();
        let all = self.watches.clone();
        let name = known.entry.name.clone();
        self.nats.spawn(follow(js, stream, tx, all, name));
        Ok(rx)
    }
}

fn advance(end: &mut u64, to: u64) -> bool {
    if to > *end {
        *end = to;
        true
    } else {
        false
    }
}

/// How long a new stream may take to elect its leader before create returns anyway.
const LEADER_WAIT: Duration = Duration::from_secs(10);

/// Wait until `stream` has a leader (a new R3 stream elects one after its
/// creation is acknowledged; until then appends find no responder).
async fn await_leader(js: &jetstream::Context, stream: &str) {
    let deadline = tokio::time::Instant::now() + LEADER_WAIT;
    while tokio::time::Instant::now() < deadline {
        if let Ok(s) = js.get_stream_no_info(stream).await
            && let Ok(info) = s.get_info().await
            && info
                .cluster
                .as_ref()
                .is_some_and(|c| c.leader.as_deref().is_some_and(|l| !l.is_empty()))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::warn!(%stream, "a new partition stream has no leader after {LEADER_WAIT:?}");
}

/// `(start, end, bytes)` of a partition stream: offsets are sequences − 1.
async fn stream_state(
    js: &jetstream::Context,
    stream: &str,
) -> std::result::Result<(u64, u64, u64), OpError> {
    let s = js.get_stream_no_info(stream).await?;
    let info = s.get_info().await?;
    let st = info.state;
    let end = st.last_sequence;
    let start = if st.messages == 0 {
        end
    } else {
        st.first_sequence.saturating_sub(1)
    };
    Ok((start, end, st.bytes))
}

/// Publish one message, or several as one atomic batch; the sequence of the
/// last one.
async fn publish_all(
    js: &jetstream::Context,
    mut messages: Vec<jetstream::message::OutboundMessage>,
) -> std::result::Result<u64, OpError> {
    let Some(last) = messages.pop() else {
        return Err("nothing to publish".into());
    };
    if messages.is_empty() {
        let ack = js.publish(last.subject, last.payload).await?.await?;
        return Ok(ack.sequence);
    }
    let mut batch = js.batch_publish().build();
    for m in messages {
        batch.add_message(m).await?;
    }
    let ack = batch.commit_message(last).await?;
    Ok(ack.sequence)
}

/// Follow a partition stream's new sequences into `tx` until nobody watches
/// or the stream is gone. A broken consumer is re-created from the last
/// sequence seen.
async fn follow(
    js: jetstream::Context,
    stream: String,
    tx: watch::Sender<u64>,
    all: Arc<Mutex<HashMap<String, watch::Sender<u64>>>>,
    topic: String,
) {
    loop {
        let from = *tx.borrow() + 1;
        let consumer = async {
            let s = js.get_stream_no_info(&stream).await?;
            let c = s
                .create_consumer(consumer::push::OrderedConfig {
                    deliver_subject: js.client().new_inbox(),
                    headers_only: true,
                    deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                        start_sequence: from,
                    },
                    ..Default::default()
                })
                .await?;
            let messages = c.messages().await?;
            Ok::<_, OpError>(messages)
        };
        let mut messages = tokio::select! {
            made = consumer => match made {
                Ok(m) => m,
                Err(e) => {
                    if js.get_stream_no_info(&stream).await.is_err() {
                        tracing::debug!(%topic, %stream, "partition stream gone; no longer watched");
                        break;
                    }
                    tracing::warn!(%topic, %stream, error = %e, "cannot follow a partition; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            () = tx.closed() => break,
        };
        loop {
            tokio::select! {
                next = messages.next() => match next {
                    Some(Ok(m)) => {
                        if let Ok(info) = m.info() {
                            let seq = info.stream_sequence;
                            tx.send_if_modified(|e| advance(e, seq));
                        }
                    }
                    Some(Err(e)) => {
                        tracing::debug!(%topic, %stream, error = %e, "partition follower interrupted");
                        break;
                    }
                    None => break,
                },
                () = tx.closed() => break,
            }
        }
        if tx.is_closed() {
            break;
        }
    }
    let mut watches = all.lock();
    if watches.get(&stream).is_some_and(|t| t.same_channel(&tx)) {
        watches.remove(&stream);
    }
}

impl EventLog for JetStreamLog {
    fn create_topic(&self, name: &str, config: TopicConfig) -> Result<TopicInfo> {
        validate_topic_name(name)?;
        config.validate()?;
        let entry = TopicEntry {
            name: name.to_string(),
            incarnation: uuid::Uuid::new_v4().simple().to_string(),
            config,
        };
        let value =
            serde_json::to_vec(&entry).map_err(|e| LogError::InvalidConfig(e.to_string()))?;
        let configs: Vec<stream::Config> = (0..entry.config.partitions)
            .map(|p| self.stream_config(&entry, p))
            .collect();
        let js = self.js.clone();
        let directory = self.directory.clone();
        let key = names::topic_key(name);
        let topic = name.to_string();
        let revision = self.run(async move {
            // An existing name needs no streams made and dropped again (and a
            // deploy re-checking its outputs then needs only this read).
            if let Ok(Some(_)) = directory.get(&key).await {
                return Err(LogError::TopicExists(topic.clone()));
            }
            // A cluster that just formed may not count all its peers yet
            // ("no suitable peers for placement"): try again for a while.
            // Making an existing stream with the same settings is a no-op.
            let placing_until = tokio::time::Instant::now() + PLACEMENT_WAIT;
            let failed = loop {
                let made =
                    futures::future::join_all(configs.iter().map(|c| js.create_stream(c.clone())))
                        .await;
                let failed = made
                    .iter()
                    .find_map(|r| r.as_ref().err())
                    .map(|e| e.to_string());
                match failed {
                    Some(e)
                        if e.contains("no suitable peers")
                            && tokio::time::Instant::now() < placing_until =>
                    {
                        tracing::debug!(%topic, "placing its streams: {e}; trying again");
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    failed => break failed,
                }
            };
            let created = match failed {
                Some(e) => Err(backend("creating the partition streams", e)),
                None => directory.create(&key, value.into()).await.map_err(|e| {
                    if e.kind() == kv::CreateErrorKind::AlreadyExists {
                        LogError::TopicExists(topic.clone())
                    } else {
                        backend("recording the topic in the directory", e)
                    }
                }),
            };
            if created.is_err() {
                for c in &configs {
                    let _ = js.delete_stream(&c.name).await;
                }
            } else {
                // Usable when this returns: each stream has elected its leader.
                for c in &configs {
                    await_leader(&js, &c.name).await;
                }
            }
            created
        })?;
        let known = Arc::new(KnownTopic {
            entry,
            revision,
            round_robin: RoundRobin::default(),
        });
        self.topics.write().insert(name.to_string(), known.clone());
        self.info(&known)
    }

    fn delete_topic(&self, name: &str) -> Result<()> {
        let known = self.fetch(name)?;
        let directory = self.directory.clone();
        let js = self.js.clone();
        let key = names::topic_key(name);
        let revision = known.revision;
        let streams: Vec<String> = (0..known.entry.config.partitions)
            .map(|p| names::stream_name(&self.ns, &known.entry.incarnation, p))
            .collect();
        let topic = name.to_string();
        self.run(async move {
            directory
                .delete_expect_revision(&key, Some(revision))
                .await
                .map_err(|e| {
                    if e.kind() == kv::DeleteErrorKind::WrongLastRevision {
                        LogError::UnknownTopic(topic.clone())
                    } else {
                        backend("removing the topic from the directory", e)
                    }
                })?;
            for s in &streams {
                if let Err(e) = js.delete_stream(s).await {
                    tracing::warn!(topic = %topic, stream = %s, error = %e,
                        "the topic is deleted but its stream could not be removed");
                }
            }
            Ok(())
        })?;
        self.topics.write().remove(name);
        let mut watches = self.watches.lock();
        for p in 0..known.entry.config.partitions {
            let stream = names::stream_name(&self.ns, &known.entry.incarnation, p);
            self.cursors.drop_stream(&stream);
            watches.remove(&stream);
        }
        Ok(())
    }

    fn topics(&self) -> Vec<TopicInfo> {
        let directory = self.directory.clone();
        let keys = self.run(async move {
            let mut keys = match directory.keys().await {
                Ok(k) => k,
                Err(e) => return Err(backend("listing the topic directory", e)),
            };
            let mut out = Vec::new();
            while let Some(k) = keys.next().await {
                out.push(k.map_err(|e| backend("listing the topic directory", e))?);
            }
            Ok(out)
        });
        let keys = match keys {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(error = %e, "listing topics from this host's cache only");
                self.topics
                    .read()
                    .values()
                    .map(|t| names::topic_key(&t.entry.name))
                    .collect()
            }
        };
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            // Keys map back to names one-to-one ('=' stands for '.').
            let name = key.replace('=', ".");
            match self.fetch(&name).and_then(|k| self.info(&k)) {
                Ok(info) => out.push(info),
                Err(LogError::UnknownTopic(_)) => {}
                Err(e) => tracing::warn!(topic = %name, error = %e, "cannot describe a topic"),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    fn topic(&self, name: &str) -> Result<TopicInfo> {
        let known = self.known(name)?;
        self.info(&known)
    }

    /// From the directory (cached): no request to the partitions' streams.
    fn topic_meta(&self, name: &str) -> Result<TopicMeta> {
        let known = self.known(name)?;
        Ok(TopicMeta {
            name: known.entry.name.clone(),
            incarnation: known.entry.incarnation.clone(),
            config: known.entry.config.clone(),
        })
    }

    /// One request (the stream's state) for both.
    fn bounds(&self, topic: &str, partition: u32) -> Result<(u64, u64)> {
        JetStreamLog::bounds(self, topic, partition)
    }

    fn partition_for(&self, topic: &str, key: &[u8]) -> Result<u32> {
        let known = self.known(topic)?;
        let n = known.entry.config.partitions;
        Ok(if key.is_empty() {
            known.round_robin.next(n)
        } else {
            partition_for_key(key, n)
        })
    }

    fn append(&self, topic: &str, partition: u32, records: &[Record]) -> Result<AppendAck> {
        self.append_messages(topic, partition, &RecordBatch::from_records(0, records))
    }

    fn append_batch(&self, topic: &str, partition: u32, batch: &RecordBatch) -> Result<AppendAck> {
        self.append_messages(topic, partition, batch)
    }

    /// Visible at once: JetStream has no invisible tail (see the module doc).
    fn append_deferred(
        &self,
        topic: &str,
        partition: u32,
        records: &[Record],
    ) -> Result<AppendAck> {
        self.append(topic, partition, records)
    }

    fn append_batch_deferred(
        &self,
        topic: &str,
        partition: u32,
        batch: &RecordBatch,
    ) -> Result<AppendAck> {
        self.append_messages(topic, partition, batch)
    }

    fn publish(&self, topic: &str, partition: u32, up_to: u64) -> Result<()> {
        let (start, end) = self.bounds(topic, partition)?;
        if up_to > end {
            return Err(LogError::OffsetOutOfRange {
                offset: up_to,
                start,
                end,
            });
        }
        Ok(())
    }

    fn truncate(&self, topic: &str, partition: u32, to: u64, _force: bool) -> Result<()> {
        let (start, end) = self.bounds(topic, partition)?;
        if to > end || to < start {
            return Err(LogError::OffsetOutOfRange {
                offset: to,
                start,
                end,
            });
        }
        if to == end {
            return Ok(());
        }
        Err(LogError::Unsupported(format!(
            "JetStream cannot cut the tail of partition {partition} of {topic:?} \
             (from {to} to its end {end}): its records are already visible"
        )))
    }

    fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<RecordBatch> {
        let (known, stream) = self.partition(topic, partition)?;
        let (start, end) = self.bounds(topic, partition)?;
        if from < start || from > end {
            return Err(LogError::OffsetOutOfRange {
                offset: from,
                start,
                end,
            });
        }
        let wanted = max_records.min(MAX_READ_RECORDS).min((end - from) as usize);
        if wanted == 0 {
            return Ok(RecordBatch::default());
        }
        let js = self.js.clone();
        let cursor = self.cursors.take(&stream, from);
        let sequential = cursor.is_some() || self.cursors.continues(&stream, from);
        let opened = stream.clone();
        let (cursor, messages) = self.on_topic(&known, "reading", async move {
            if !sequential {
                let messages = cursor::direct(&js, &opened, from, wanted, max_bytes, end).await?;
                return Ok((None, messages));
            }
            let mut cursor = match cursor {
                Some(c) => c,
                None => cursor::open(&js, &opened, from).await?,
            };
            let messages = cursor::read(&mut cursor, from, wanted, max_bytes, end).await?;
            if cursor.broken && !messages.is_empty() {
                return Ok((None, messages));
            }
            if messages.is_empty() {
                // Records exist past `from` (`wanted` > 0), yet the consumer
                // delivered none in its wait: it stalled (e.g. the server
                // holding it died). Drop it and read them directly; the next
                // sequential read opens a fresh one.
                if !cursor.broken {
                    tracing::warn!(stream = %opened, from, "a stalled reader's consumer was replaced");
                }
                let messages = cursor::direct(&js, &opened, from, wanted, max_bytes, end).await?;
                return Ok((None, messages));
            }
            Ok((Some(cursor), messages))
        })?;
        let mut batch = RecordBatch::default();
        for (sequence, payload) in &messages {
            codec::decode_into(&mut batch, sequence - 1, payload).map_err(|e| {
                backend(
                    &format!(
                        "offset {} of partition {partition} of {topic:?}",
                        sequence - 1
                    ),
                    e,
                )
            })?;
        }
        let next = messages.last().map_or(from, |(sequence, _)| *sequence);
        match cursor {
            Some(cursor) => self.cursors.put(stream, next, cursor),
            None => self.cursors.ended(stream, next),
        }
        Ok(batch)
    }

    fn start_offset(&self, topic: &str, partition: u32) -> Result<u64> {
        Ok(self.bounds(topic, partition)?.0)
    }

    fn end_offset(&self, topic: &str, partition: u32) -> Result<u64> {
        Ok(self.bounds(topic, partition)?.1)
    }

    fn written_end(&self, topic: &str, partition: u32) -> Result<u64> {
        self.end_offset(topic, partition)
    }

    /// A scan in offset order (record timestamps are the producers', not
    /// JetStream's store times, so they need not grow with offsets).
    fn offset_for_timestamp(&self, topic: &str, partition: u32, ts_ms: i64) -> Result<Option<u64>> {
        let (mut at, end) = self.bounds(topic, partition)?;
        while at < end {
            let batch = self.read(topic, partition, at, MAX_APPEND_RECORDS, 4 << 20)?;
            if let Some(i) = batch.timestamps.iter().position(|&t| t >= ts_ms) {
                return Ok(Some(batch.offsets[i]));
            }
            match batch.offsets.last() {
                Some(&last) => at = last + 1,
                None => break,
            }
        }
        Ok(None)
    }

    fn wait_for(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        timeout: Duration,
    ) -> Result<bool> {
        let mut rx = self.watch(topic, partition)?;
        self.run(async move {
            let reached = tokio::time::timeout(timeout, rx.wait_for(|&end| end > offset)).await;
            Ok(matches!(reached, Ok(Ok(_))))
        })
    }

    fn watch_end(&self, topic: &str, partition: u32) -> Result<watch::Receiver<u64>> {
        self.watch(topic, partition)
    }

    /// Nothing to do: an acknowledged append is already stored by a majority
    /// of its stream's replicas.
    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn max_batch_bytes(&self) -> usize {
        self.max_payload.saturating_sub(HEADER_ROOM)
    }

    /// Appends are visible at once and tails cannot be cut: processors need
    /// the cluster commit protocol (see the module doc).
    fn supports_processor_commits(&self) -> bool {
        false
    }
}
