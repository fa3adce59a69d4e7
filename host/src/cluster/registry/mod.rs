//! The plugin registry in cluster mode, shared by every host: one record per
//! deployed plugin in the KV bucket `<ns>_plugins` (the same
//! [`PluginRecord`] the embedded store keeps), and the components,
//! content-addressed by SHA-256, in the object store `<ns>_components`.
//!
//! # Promises
//!
//! - [`Registry::update`] is a compare-and-set on the record's revision,
//!   retried on conflict: two hosts deploying under one name at once get
//!   versions n and n + 1, never one number twice, and neither change is
//!   lost.
//! - A component is stored before any record names it
//!   ([`Registry::put_component`] first), and is checked against its hash
//!   when read back.
//! - [`Registry::follow`] reports every record as it is now, then every
//!   change made through any host, in order per plugin.
//! - Every change carries its revision (the bucket's sequence, growing
//!   across all records), so a host applying changes from several sources
//!   — its own updates, the follower, the list at start — can drop one
//!   older than what it already applied.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{kv, object_store};
use futures::StreamExt;
use sha2::Digest;
use tokio::io::AsyncReadExt;

use crate::nats::{Nats, NatsError};
use crate::store::PluginRecord;

/// How often `update` retries a compare-and-set that lost a race.
const MAX_ATTEMPTS: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The change asked for does not apply to the record as it is.
    #[error("{0}")]
    Rejected(String),
    #[error("component {0} is not stored")]
    MissingComponent(String),
    #[error("stored {what} is corrupt: {detail}")]
    Corrupt { what: String, detail: String },
    #[error("the registry kept changing under {attempts} attempts to update {name}")]
    Contended { name: String, attempts: usize },
    #[error(transparent)]
    Nats(#[from] NatsError),
}

/// A change to the registry, with its revision, as [`Registry::follow`]
/// reports it and [`Registry::update`] answers it.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Put(PluginRecord, u64),
    Deleted(String, u64),
}

impl Change {
    pub fn name(&self) -> &str {
        match self {
            Change::Put(record, _) => &record.name,
            Change::Deleted(name, _) => name,
        }
    }

    pub fn revision(&self) -> u64 {
        match self {
            Change::Put(_, r) | Change::Deleted(_, r) => *r,
        }
    }
}

pub struct Registry {
    nats: Arc<Nats>,
    plugins: kv::Store,
    components: object_store::ObjectStore,
}

fn request(what: &str, e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Nats(NatsError::request(what, e))
}

/// Plugin names are `[a-z0-9._-]`; KV keys may not hold empty tokens, so `.`
/// becomes `=` (not in names: one-to-one).
fn key(name: &str) -> String {
    name.replace('.', "=")
}

fn decode(name: &str, bytes: &[u8]) -> Result<PluginRecord, RegistryError> {
    serde_json::from_slice(bytes).map_err(|e| RegistryError::Corrupt {
        what: format!("registry record {name}"),
        detail: e.to_string(),
    })
}

impl Registry {
    /// Open (creating if needed) the registry bucket and component store.
    pub fn open(nats: Arc<Nats>) -> Result<Registry, RegistryError> {
        let ns = nats.namespace().to_string();
        let opener = nats.clone();
        let (plugins, components) = nats.run(async move {
            let plugins = opener
                .key_value(kv::Config {
                    bucket: format!("{ns}_plugins"),
                    description: "weir: deployed plugins".into(),
                    history: 1,
                    ..Default::default()
                })
                .await?;
            let bucket = format!("{ns}_components");
            let js = opener.js().clone();
            let replicas = opener.replicas();
            let components = crate::nats::making(&bucket, || {
                let (js, bucket) = (js.clone(), bucket.clone());
                async move {
                    match js.get_object_store(&bucket).await {
                        Ok(store) => Ok(store),
                        Err(_) => {
                            js.create_object_store(object_store::Config {
                                bucket,
                                description: Some("weir: plugin components by sha256".into()),
                                num_replicas: replicas,
                                ..Default::default()
                            })
                            .await
                        }
                    }
                }
            })
            .await?;
            Ok::<_, NatsError>((plugins, components))
        })??;
        Ok(Registry {
            nats,
            plugins,
            components,
        })
    }

    /// Store a component (a no-op if it is stored already); its SHA-256 (hex).
    pub fn put_component(&self, bytes: &[u8]) -> Result<String, RegistryError> {
        let sha = hex::encode(sha2::Sha256::digest(bytes));
        let store = self.components.clone();
        let name = sha.clone();
        let data = bytes.to_vec();
        self.nats.run(async move {
            if store.info(&name).await.is_ok() {
                return Ok(());
            }
            let mut reader = data.as_slice();
            store
                .put(name.as_str(), &mut reader)
                .await
                .map(drop)
                .map_err(|e| request("storing a component", e))
        })??;
        Ok(sha)
    }

    /// A stored component, checked against its hash.
    pub fn component(&self, sha256: &str) -> Result<Vec<u8>, RegistryError> {
        let store = self.components.clone();
        let name = sha256.to_string();
        let bytes = self.nats.run(async move {
            let mut object = match store.get(&name).await {
                Ok(o) => o,
                Err(e) if e.kind() == object_store::GetErrorKind::NotFound => {
                    return Err(RegistryError::MissingComponent(name));
                }
                Err(e) => return Err(request("reading a component", e)),
            };
            let mut out = Vec::new();
            object
                .read_to_end(&mut out)
                .await
                .map_err(|e| request("reading a component", e))?;
            Ok(out)
        })??;
        if hex::encode(sha2::Sha256::digest(&bytes)) != sha256 {
            return Err(RegistryError::Corrupt {
                what: format!("component {sha256}"),
                detail: "its content does not match its hash".into(),
            });
        }
        Ok(bytes)
    }

    /// The record of `name`, with its revision.
    fn entry(&self, name: &str) -> Result<Option<(PluginRecord, u64)>, RegistryError> {
        let plugins = self.plugins.clone();
        let k = key(name);
        let found = self.nats.run(async move {
            plugins
                .entry(k)
                .await
                .map_err(|e| request("reading the registry", e))
        })??;
        match found {
            Some(e) if e.operation == kv::Operation::Put => {
                Ok(Some((decode(name, &e.value)?, e.revision)))
            }
            // A delete marker: gone, but its revision is what a create expects.
            Some(_) | None => Ok(None),
        }
    }

    pub fn get(&self, name: &str) -> Result<Option<PluginRecord>, RegistryError> {
        Ok(self.entry(name)?.map(|(r, _)| r))
    }

    /// Every record, by name, as changes (with their revisions).
    pub fn list(&self) -> Result<Vec<Change>, RegistryError> {
        let plugins = self.plugins.clone();
        let keys = self.nats.run(async move {
            // Listing makes a consumer, which a cluster busy making streams
            // (hosts starting together) may not answer in time: try again.
            let mut attempt = 1;
            loop {
                match list_keys(&plugins).await {
                    Err(e) if attempt < LIST_ATTEMPTS => {
                        tracing::debug!("listing the registry, attempt {attempt}: {e}");
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    done => return done,
                }
            }
        })??;
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            if let Some((r, revision)) = self.entry(&k.replace('=', "."))? {
                out.push(Change::Put(r, revision));
            }
        }
        out.sort_by(|a, b| a.name().cmp(b.name()));
        Ok(out)
    }

    /// Change `name`'s record with `change` (given the record as it is, or
    /// `None`; returning `None` deletes it), as one compare-and-set, retried
    /// with the fresh record when another host changed it meanwhile. Returns
    /// what was written (a delete's revision is a lower bound: the marker's
    /// own, at least one above the record it removed).
    pub fn update(
        &self,
        name: &str,
        mut change: impl FnMut(Option<PluginRecord>) -> Result<Option<PluginRecord>, RegistryError>,
    ) -> Result<Change, RegistryError> {
        for _ in 0..MAX_ATTEMPTS {
            let current = self.entry(name)?;
            let revision = current.as_ref().map(|(_, r)| *r);
            let next = change(current.map(|(r, _)| r))?;
            let plugins = self.plugins.clone();
            let k = key(name);
            let value = match &next {
                Some(r) => Some(serde_json::to_vec(r).map_err(|e| RegistryError::Corrupt {
                    what: format!("registry record {name}"),
                    detail: e.to_string(),
                })?),
                None => None,
            };
            let won = self.nats.run(async move {
                match (value, revision) {
                    (Some(v), Some(rev)) => plugins.update(&k, v.into(), rev).await.ok(),
                    (Some(v), None) => plugins.create(&k, v.into()).await.ok(),
                    (None, Some(rev)) => plugins
                        .delete_expect_revision(&k, Some(rev))
                        .await
                        .ok()
                        .map(|()| rev + 1),
                    (None, None) => Some(0),
                }
            })?;
            if let Some(written) = won {
                return Ok(match next {
                    Some(record) => Change::Put(record, written),
                    None => Change::Deleted(name.to_string(), written),
                });
            }
        }
        Err(RegistryError::Contended {
            name: name.to_string(),
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Every record as it is now, then every change, as they happen (on a
    /// channel that ends when the registry's watch ends).
    pub fn follow(&self) -> Result<std::sync::mpsc::Receiver<Change>, RegistryError> {
        let plugins = self.plugins.clone();
        let mut watch = self.nats.run(async move {
            plugins
                .watch_with_history(">")
                .await
                .map_err(|e| request("following the registry", e))
        })??;
        let (tx, rx) = std::sync::mpsc::channel();
        self.nats.spawn(async move {
            while let Some(Ok(entry)) = watch.next().await {
                let name = entry.key.replace('=', ".");
                let change = match entry.operation {
                    kv::Operation::Put => match decode(&name, &entry.value) {
                        Ok(r) => Change::Put(r, entry.revision),
                        Err(e) => {
                            tracing::error!(plugin = %name, error = %e, "skipping a registry record");
                            continue;
                        }
                    },
                    kv::Operation::Delete | kv::Operation::Purge => {
                        Change::Deleted(name, entry.revision)
                    }
                };
                if tx.send(change).is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }
}

const LIST_ATTEMPTS: u32 = 3;

/// Every key of the registry bucket.
async fn list_keys(plugins: &kv::Store) -> Result<Vec<String>, RegistryError> {
    let mut keys = plugins
        .keys()
        .await
        .map_err(|e| request("listing the registry", e))?;
    let mut out = Vec::new();
    while let Some(k) = keys.next().await {
        out.push(k.map_err(|e| request("listing the registry", e))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
