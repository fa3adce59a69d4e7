//! Idempotency keys of produce requests, shared by every host of a cluster:
//! a keyed request retried through another host appends exactly the parts
//! still missing and answers the first attempt's offsets, as a retry through
//! the same host does (`api::idempotency` owns the rule; this is where hosts
//! agree on it).
//!
//! The bucket `<ns>_produce_keys` holds one entry per (topic incarnation,
//! idempotency key), named by a SHA-256 of both (KV keys allow few
//! characters). Its value says which host writes the request, whether it
//! is done or was given up, and the parts written (partition, first offset,
//! records).
//!
//! - A host **claims** the entry before appending anything: a create, or a
//!   compare-and-set over an entry whose writer gave up (a failed attempt
//!   frees it) or made no progress for the *takeover* time ([`TAKEOVER`]:
//!   its host died). A duplicate arriving meanwhile waits for the entry to
//!   be done or taken over.
//! - Before each part after the first, the writer **touches** the entry (a
//!   compare-and-set): once another host took the request over the touch
//!   fails and the writer stops, appending nothing more.
//! - A request that succeeded is marked **done** with its parts, so a retry
//!   through any host answers from them without appending.
//! - A host taking over cannot know which parts a dead writer appended
//!   after its last touch: [`Claim::taken_over`] tells the caller to look
//!   for them in the log (each part's first record carries its mark).
//!
//! Assumption, as with JetStream's de-duplication window: no host stalls
//! longer than the takeover time between touching an entry and appending
//! its next part. Entries expire after [`KEY_TTL`]; a retry later than that
//! is checked by each host's own memory and scan of the log only.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::nats::{Nats, NatsError};

/// How long a writer may make no progress before another host takes its
/// request over.
pub const TAKEOVER: Duration = Duration::from_secs(15);
/// How long the cluster remembers a key.
pub const KEY_TTL: Duration = Duration::from_secs(24 * 3600);
/// How often a duplicate looks at an entry another host is writing.
const POLL: Duration = Duration::from_millis(50);

/// One part of a request: (partition, first offset, records).
pub type SharedPart = (u32, u64, u64);

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Another host took the request over: this one must append nothing more.
    #[error("another host took this request over after it made no progress for {0:?}")]
    TakenOver(Duration),
    #[error("produce key entry {entry}: {detail}")]
    Corrupt { entry: String, detail: String },
    #[error(transparent)]
    Nats(#[from] NatsError),
}

/// What an entry holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct KeyEntry {
    host: String,
    #[serde(default)]
    done: bool,
    /// Given up by its writer: anyone may take it over at once.
    #[serde(default)]
    free: bool,
    #[serde(default)]
    parts: Vec<SharedPart>,
}

/// What a claim found.
#[derive(Debug)]
pub enum Claimed {
    /// Done before (on any host), with its parts: answer from them.
    Done(Vec<SharedPart>),
    /// This host writes it now.
    Mine(Claim),
}

/// This host's claim on a request.
#[derive(Debug)]
pub struct Claim {
    entry: String,
    revision: u64,
    /// The parts the entry records as written.
    pub parts: Vec<SharedPart>,
    /// Another host had started it: parts it appended after its last touch
    /// are in the log but not in `parts`.
    pub taken_over: bool,
}

/// The cluster's shared idempotency keys, as one host uses them.
pub struct ProduceKeys {
    nats: Arc<Nats>,
    host: String,
    bucket: kv::Store,
    takeover: Duration,
}

impl ProduceKeys {
    /// Open (or make) the bucket as `host`.
    pub fn open(nats: Arc<Nats>, host: &str) -> Result<ProduceKeys, NatsError> {
        let config = kv::Config {
            bucket: format!("{}_produce_keys", nats.namespace()),
            description: "weir: idempotency keys of produce requests (entries expire)".into(),
            history: 1,
            max_age: KEY_TTL,
            ..Default::default()
        };
        let opener = nats.clone();
        let bucket = nats.run(async move { opener.key_value(config).await })??;
        Ok(ProduceKeys {
            nats,
            host: host.to_string(),
            bucket,
            takeover: TAKEOVER,
        })
    }

    /// The same with another takeover time (tests).
    pub fn with_takeover(mut self, takeover: Duration) -> ProduceKeys {
        self.takeover = takeover;
        self
    }

    /// Claim request `key` of the topic incarnation `incarnation` for this
    /// host, or learn it is done; waits while another host writes it (at
    /// most the takeover time without progress).
    pub fn claim(&self, incarnation: &str, key: &str) -> Result<Claimed, KeyError> {
        let entry = entry_name(incarnation, key);
        // The revision last seen of a request another host writes, and since when.
        let mut watching: Option<(u64, Instant)> = None;
        loop {
            let Some((current, revision)) = self.read(&entry)? else {
                let mine = KeyEntry {
                    host: self.host.clone(),
                    ..KeyEntry::default()
                };
                if let Some(revision) = self.write(&entry, &mine, None)? {
                    return Ok(Claimed::Mine(Claim {
                        entry,
                        revision,
                        parts: Vec::new(),
                        taken_over: false,
                    }));
                }
                continue; // created by another host meanwhile
            };
            if current.done {
                return Ok(Claimed::Done(current.parts));
            }
            let stalled = match watching {
                Some((seen, since)) if seen == revision => since.elapsed() >= self.takeover,
                _ => {
                    watching = Some((revision, Instant::now()));
                    false
                }
            };
            // A request this host wrote before (an attempt whose client
            // went away): its parts are known here, take it back at once.
            if current.free || stalled || current.host == self.host {
                let mine = KeyEntry {
                    host: self.host.clone(),
                    parts: current.parts.clone(),
                    ..KeyEntry::default()
                };
                if let Some(revision) = self.write(&entry, &mine, Some(revision))? {
                    return Ok(Claimed::Mine(Claim {
                        entry,
                        revision,
                        parts: current.parts,
                        taken_over: true,
                    }));
                }
                continue;
            }
            std::thread::sleep(POLL);
        }
    }

    /// Record `parts` as written and make sure this host still writes the
    /// request (before appending another part).
    pub fn touch(&self, claim: &mut Claim, parts: Vec<SharedPart>) -> Result<(), KeyError> {
        self.update(claim, false, false, parts)
    }

    /// The request is answered (`done`, with its `parts`) or given up (any
    /// host may take it over at once).
    pub fn finish(
        &self,
        mut claim: Claim,
        done: bool,
        parts: Vec<SharedPart>,
    ) -> Result<(), KeyError> {
        self.update(&mut claim, done, !done, parts)
    }

    fn update(
        &self,
        claim: &mut Claim,
        done: bool,
        free: bool,
        parts: Vec<SharedPart>,
    ) -> Result<(), KeyError> {
        let value = KeyEntry {
            host: self.host.clone(),
            done,
            free,
            parts,
        };
        match self.write(&claim.entry, &value, Some(claim.revision))? {
            Some(revision) => {
                claim.revision = revision;
                claim.parts = value.parts;
                Ok(())
            }
            None => Err(KeyError::TakenOver(self.takeover)),
        }
    }

    /// The entry and its revision, if there is one.
    fn read(&self, entry: &str) -> Result<Option<(KeyEntry, u64)>, KeyError> {
        let (bucket, name) = (self.bucket.clone(), entry.to_string());
        let found = self.nats.run(async move {
            bucket
                .entry(name)
                .await
                .map_err(|e| NatsError::request("reading a produce key", e))
        })??;
        let Some(found) = found else {
            return Ok(None);
        };
        if found.operation != kv::Operation::Put {
            return Ok(None);
        }
        let value = serde_json::from_slice(&found.value).map_err(|e| KeyError::Corrupt {
            entry: entry.to_string(),
            detail: e.to_string(),
        })?;
        Ok(Some((value, found.revision)))
    }

    /// Write `value` if the entry is still at `revision` (`None`: if there
    /// is none). Answers the new revision, or `None` if another host wrote first.
    fn write(
        &self,
        entry: &str,
        value: &KeyEntry,
        revision: Option<u64>,
    ) -> Result<Option<u64>, KeyError> {
        let bytes = serde_json::to_vec(value).map_err(|e| KeyError::Corrupt {
            entry: entry.to_string(),
            detail: e.to_string(),
        })?;
        let (bucket, name) = (self.bucket.clone(), entry.to_string());
        let written = self.nats.run(async move {
            match revision {
                Some(r) => bucket
                    .update(name, bytes.into(), r)
                    .await
                    .map(Some)
                    .or_else(|e| match e.kind() {
                        kv::UpdateErrorKind::WrongLastRevision => Ok(None),
                        _ => Err(NatsError::request("writing a produce key", e)),
                    }),
                None => bucket
                    .create(name, bytes.into())
                    .await
                    .map(Some)
                    .or_else(|e| match e.kind() {
                        kv::CreateErrorKind::AlreadyExists => Ok(None),
                        _ => Err(NatsError::request("writing a produce key", e)),
                    }),
            }
        })??;
        Ok(written)
    }
}

/// The entry of `key` in topic incarnation `incarnation`.
fn entry_name(incarnation: &str, key: &str) -> String {
    let mut hash = sha2::Sha256::new();
    hash.update(incarnation.as_bytes());
    hash.update([0]);
    hash.update(key.as_bytes());
    format!("{:x}", hash.finalize())
}

#[cfg(test)]
mod tests;
