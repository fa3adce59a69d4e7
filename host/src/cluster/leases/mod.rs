//! Which live host runs which processor partition: membership, a balanced
//! assignment, and leases with a time to live.
//!
//! - **Membership**: bucket `<ns>_hosts` whose entries live `ttl`. Every host
//!   re-puts its own entry on each [`Leases::tick`]; a host whose entry aged
//!   out is dead.
//! - **Assignment**: a unit's desired owner among the live hosts is the one
//!   with the highest hash of (host, unit) — rendezvous hashing: balanced, the
//!   same on every host without talking, and when a host joins or leaves only
//!   the units it gains or loses move.
//! - **Leases**: bucket `<ns>_leases` whose entries live `ttl`. A host takes a
//!   free unit it desires with a create (refused while anyone holds it), renews
//!   what it holds with a compare-and-set on the entry's revision, and gives
//!   back a unit it holds but no longer desires once it stopped working on it
//!   (a delete at that revision). A renewal that fails means the lease is lost
//!   (expired and maybe taken): the caller must stop that unit.
//!
//! Promises: two hosts never hold the same lease at once *according to
//! JetStream*; a host that was paused past `ttl` learns it lost its leases at
//! its next tick, not before, so leases alone do not fence — every commit must
//! still be checked where it lands (the processor's commit stream). A dead
//! host's units are free within `ttl` and taken at the next tick of their new
//! desired owner.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use futures::StreamExt;
use parking_lot::Mutex;
use sha2::Digest;

use crate::nats::{Nats, NatsError};

/// One processor partition: what a lease is for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Unit {
    pub processor: String,
    pub partition: u32,
}

impl Unit {
    pub fn new(processor: impl Into<String>, partition: u32) -> Unit {
        Unit {
            processor: processor.into(),
            partition,
        }
    }

    /// Its key in the lease bucket. Processor names are `[a-z0-9._-]`; KV keys
    /// may not hold empty tokens, so `.` becomes `=` (not in names: one-to-one).
    fn key(&self) -> String {
        format!("{}/{}", self.processor.replace('.', "="), self.partition)
    }
}

/// The live host with the highest rendezvous score for `unit`.
pub fn desired_owner<'a>(unit: &Unit, hosts: &'a [String]) -> Option<&'a str> {
    hosts
        .iter()
        .max_by_key(|h| score(h, unit))
        .map(String::as_str)
}

fn score(host: &str, unit: &Unit) -> (u64, String) {
    let digest = sha2::Sha256::new()
        .chain_update(host.as_bytes())
        .chain_update([0])
        .chain_update(unit.key().as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // The host name breaks (astronomically unlikely) ties the same way everywhere.
    (u64::from_be_bytes(first), host.to_string())
}

/// What changed for this host at a tick.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Leases taken now, with their fencing token (the entry's revision).
    pub acquired: Vec<(Unit, u64)>,
    /// Leases this host held and no longer holds: stop these units now.
    pub lost: Vec<Unit>,
    /// Leases held that another live host should run (or whose processor is
    /// gone): stop these units, then [`Leases::release`] them.
    pub to_release: Vec<Unit>,
}

/// This host's view of membership and of its own leases.
pub struct Leases {
    nats: Arc<Nats>,
    host: String,
    hosts: kv::Store,
    leases: kv::Store,
    /// Leases held: unit → revision of the entry as last written by us.
    held: Mutex<BTreeMap<Unit, u64>>,
}

impl Leases {
    /// Join the cluster as `host` (unique among live hosts), with entries that
    /// live `ttl` (a dead host's units are free after it).
    pub fn join(nats: Arc<Nats>, host: &str, ttl: Duration) -> Result<Leases, NatsError> {
        if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(NatsError::Config(format!(
                "host id {host:?}: use ASCII letters, digits, '-' or '_'"
            )));
        }
        if ttl < Duration::from_millis(500) {
            return Err(NatsError::Config(format!(
                "the lease time to live must be at least 500 ms, not {ttl:?}"
            )));
        }
        let ns = nats.namespace().to_string();
        let opener = nats.clone();
        let (hosts, leases) = nats.run(async move {
            let bucket = |name: &str, description: &str| kv::Config {
                bucket: format!("{ns}_{name}"),
                description: description.into(),
                history: 1,
                max_age: ttl,
                ..Default::default()
            };
            let hosts = opener
                .key_value(bucket("hosts", "weir: live hosts (entries expire)"))
                .await?;
            let leases = opener
                .key_value(bucket(
                    "leases",
                    "weir: processor partition -> host (entries expire)",
                ))
                .await?;
            Ok::<_, NatsError>((hosts, leases))
        })??;
        let me = Leases {
            nats,
            host: host.to_string(),
            hosts,
            leases,
            held: Mutex::new(BTreeMap::new()),
        };
        me.heartbeat()?;
        Ok(me)
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    fn heartbeat(&self) -> Result<(), NatsError> {
        let hosts = self.hosts.clone();
        let host = self.host.clone();
        self.nats.run(async move {
            hosts
                .put(&host, bytes::Bytes::from_static(b"alive"))
                .await
                .map_err(|e| NatsError::request("announcing this host", e))
        })??;
        Ok(())
    }

    /// The hosts whose entries have not aged out, sorted.
    pub fn live_hosts(&self) -> Result<Vec<String>, NatsError> {
        let hosts = self.hosts.clone();
        self.nats.run(async move {
            let mut keys = hosts
                .keys()
                .await
                .map_err(|e| NatsError::request("listing live hosts", e))?;
            let mut out = BTreeSet::new();
            while let Some(k) = keys.next().await {
                out.insert(k.map_err(|e| NatsError::request("listing live hosts", e))?);
            }
            Ok(out.into_iter().collect())
        })?
    }

    /// Leases this host holds, with their current revisions.
    pub fn held(&self) -> Vec<(Unit, u64)> {
        self.held
            .lock()
            .iter()
            .map(|(u, r)| (u.clone(), *r))
            .collect()
    }

    /// Announce this host, renew its leases, take the free units of `units`
    /// it should run, and say which it lost or should give back. Call it
    /// every `ttl / 3` or so.
    pub fn tick(&self, units: &[Unit]) -> Result<Changes, NatsError> {
        self.heartbeat()?;
        let hosts = self.live_hosts()?;
        let mut changes = Changes::default();
        let held: Vec<(Unit, u64)> = self.held();
        let leases = self.leases.clone();
        let host = self.host.clone();
        let renewed = self.nats.run(async move {
            let mut out = Vec::with_capacity(held.len());
            for (unit, revision) in held {
                let r = leases
                    .update(unit.key(), host.clone().into_bytes().into(), revision)
                    .await;
                out.push((unit, r.ok()));
            }
            out
        })?;
        {
            let mut mine = self.held.lock();
            for (unit, revision) in renewed {
                match revision {
                    Some(r) => {
                        mine.insert(unit, r);
                    }
                    None => {
                        mine.remove(&unit);
                        changes.lost.push(unit);
                    }
                }
            }
        }
        let wanted: BTreeSet<&Unit> = units.iter().collect();
        let held_now: BTreeSet<Unit> = self.held.lock().keys().cloned().collect();
        for unit in &held_now {
            let desired = desired_owner(unit, &hosts);
            if !wanted.contains(unit) || desired.is_some_and(|d| d != self.host) {
                changes.to_release.push(unit.clone());
            }
        }
        let to_take: Vec<Unit> = units
            .iter()
            .filter(|u| !held_now.contains(u))
            .filter(|u| desired_owner(u, &hosts) == Some(self.host.as_str()))
            .cloned()
            .collect();
        let leases = self.leases.clone();
        let host = self.host.clone();
        let taken = self.nats.run(async move {
            let mut out = Vec::new();
            for unit in to_take {
                if let Ok(revision) = leases
                    .create(unit.key(), host.clone().into_bytes().into())
                    .await
                {
                    out.push((unit, revision));
                }
            }
            out
        })?;
        let mut mine = self.held.lock();
        for (unit, revision) in taken {
            mine.insert(unit.clone(), revision);
            changes.acquired.push((unit, revision));
        }
        Ok(changes)
    }

    /// Give back a lease (after the unit stopped): its desired owner takes it
    /// at its next tick. Releasing a lease no longer held is a no-op.
    pub fn release(&self, unit: &Unit) -> Result<(), NatsError> {
        let Some(revision) = self.held.lock().remove(unit) else {
            return Ok(());
        };
        let leases = self.leases.clone();
        let key = unit.key();
        self.nats.run(async move {
            // A wrong revision means it expired and moved on: nothing to give back.
            let _ = leases.delete_expect_revision(key, Some(revision)).await;
        })
    }
}

#[cfg(test)]
mod tests;
