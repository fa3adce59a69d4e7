//! In-memory doubles of the two ports, for the router's unit tests.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::ApiError;
use super::backend::*;
use crate::batch::{Record, RecordBatch};
use crate::processor::{Manifest, Ownership};

pub(crate) struct MemoryRapids {
    topics: Mutex<BTreeMap<String, Vec<Vec<Record>>>>,
    round_robin: Mutex<u32>,
    appended: Notify,
    /// The real ownership rule, with processor `writer` owning topic `owned`.
    ownership: Ownership,
    /// The next append to this partition fails (a disk error, or the crash
    /// of a process between two appends).
    pub(crate) fail_next_append_to: Mutex<Option<u32>>,
}

impl Default for MemoryRapids {
    fn default() -> Self {
        let ownership = Ownership::default();
        let writer = Manifest::parse(serde_json::json!({
            "name": "writer", "kind": "enricher", "inputs": ["in"], "outputs": ["owned"]
        }))
        .unwrap();
        ownership.claim(std::sync::Arc::new(writer)).unwrap();
        MemoryRapids {
            topics: Mutex::default(),
            round_robin: Mutex::default(),
            appended: Notify::default(),
            ownership,
            fail_next_append_to: Mutex::default(),
        }
    }
}

impl MemoryRapids {
    fn view(name: &str, parts: &[Vec<Record>]) -> TopicView {
        TopicView {
            name: name.to_owned(),
            partitions: parts
                .iter()
                .enumerate()
                .map(|(i, p)| PartitionView {
                    partition: i as u32,
                    start_offset: 0,
                    end_offset: p.len() as u64,
                })
                .collect(),
        }
    }
}

impl Rapids for MemoryRapids {
    fn create_topic(&self, spec: &TopicSpec) -> Result<TopicView, ApiError> {
        let mut topics = self.topics.lock();
        if topics.contains_key(&spec.name) {
            return Err(ApiError::conflict("topic_exists", "exists"));
        }
        let parts = vec![Vec::new(); spec.partitions as usize];
        let view = Self::view(&spec.name, &parts);
        topics.insert(spec.name.clone(), parts);
        Ok(view)
    }
    fn delete_topic(&self, name: &str) -> Result<(), ApiError> {
        self.ownership.delete_topic(name, || {
            self.topics
                .lock()
                .remove(name)
                .map(|_| ())
                .ok_or_else(|| ApiError::unknown_topic(name))
        })
    }
    fn topics(&self) -> Vec<TopicView> {
        self.topics
            .lock()
            .iter()
            .map(|(n, p)| Self::view(n, p))
            .collect()
    }
    fn topic(&self, name: &str) -> Result<TopicView, ApiError> {
        let topics = self.topics.lock();
        topics
            .get(name)
            .map(|p| Self::view(name, p))
            .ok_or_else(|| ApiError::unknown_topic(name))
    }
    fn partition_for(&self, topic: &str, key: Option<&[u8]>) -> Result<u32, ApiError> {
        let n = self.topic(topic)?.partitions.len() as u32;
        Ok(match key {
            // The log's own partitioner, so tests see real placements.
            Some(k) => crate::log::partition_for_key(k, n),
            None => {
                let mut rr = self.round_robin.lock();
                *rr += 1;
                *rr % n
            }
        })
    }
    fn append(&self, topic: &str, partition: u32, records: &[Record]) -> Result<u64, ApiError> {
        self.ownership
            .client_write(topic, || Ok::<_, ApiError>(()))?;
        {
            let mut fail = self.fail_next_append_to.lock();
            if *fail == Some(partition) {
                *fail = None;
                return Err(ApiError::internal("injected append failure"));
            }
        }
        let mut topics = self.topics.lock();
        let p = topics
            .get_mut(topic)
            .ok_or_else(|| ApiError::unknown_topic(topic))?
            .get_mut(partition as usize)
            .ok_or_else(|| ApiError::unknown_partition(topic, partition, 0))?;
        let first = p.len() as u64;
        p.extend_from_slice(records);
        self.appended.notify_waiters();
        Ok(first)
    }
    fn read(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max: usize,
        _bytes: usize,
    ) -> Result<RecordBatch, ApiError> {
        let topics = self.topics.lock();
        let p = topics
            .get(topic)
            .ok_or_else(|| ApiError::unknown_topic(topic))?
            .get(partition as usize)
            .ok_or_else(|| ApiError::unknown_partition(topic, partition, 0))?;
        if offset > p.len() as u64 {
            return Err(ApiError::invalid_offset("past the end"));
        }
        let end = (offset as usize + max).min(p.len());
        Ok(RecordBatch::from_records(offset, &p[offset as usize..end]))
    }
    fn wait_for<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
        offset: u64,
        timeout: Duration,
    ) -> BoxFuture<'a, ()> {
        async move {
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                let notified = self.appended.notified();
                match self.topic(topic) {
                    Ok(v)
                        if v.partitions
                            .get(partition as usize)
                            .is_some_and(|p| p.end_offset > offset) =>
                    {
                        return;
                    }
                    Err(_) => return,
                    _ => {}
                }
                if tokio::time::timeout_at(deadline, notified).await.is_err() {
                    return;
                }
            }
        }
        .boxed()
    }
    fn sync(&self) -> Result<(), ApiError> {
        Ok(())
    }
}

/// An engine with one fake service `bank` (deposit / conflict / reject) and
/// one pond `balances`; plugins are remembered by manifest only.
#[derive(Default)]
pub(crate) struct FakeEngine {
    plugins: Mutex<BTreeMap<String, PluginView>>,
}

impl Engine for FakeEngine {
    fn deploy(
        &self,
        manifest: serde_json::Value,
        component: Vec<u8>,
    ) -> BoxFuture<'_, Result<PluginView, ApiError>> {
        async move {
            let name = manifest["name"].as_str().unwrap_or_default().to_owned();
            let mut plugins = self.plugins.lock();
            let version = plugins.get(&name).map_or(1, |p| p.active_version + 1);
            let view = PluginView {
                name: name.clone(),
                kind: manifest["kind"].as_str().unwrap_or_default().to_owned(),
                state: "running".into(),
                state_reason: None,
                active_version: version,
                inputs: vec![],
                outputs: vec![],
                manifest,
                versions: vec![VersionView {
                    version,
                    sha256: format!("{}", component.len()),
                    deployed_at_ms: 0,
                    active: true,
                }],
                partitions: vec![],
                events_in: 0,
                events_out: 0,
                error_count: 0,
                dead_lettered: 0,
                last_error: None,
                generation: 0,
                rebuilding_generation: None,
            };
            plugins.insert(name, view.clone());
            Ok(view)
        }
        .boxed()
    }
    fn plugins(&self) -> Result<Vec<PluginView>, ApiError> {
        Ok(self.plugins.lock().values().cloned().collect())
    }
    fn plugin(&self, name: &str) -> Result<PluginView, ApiError> {
        self.plugins
            .lock()
            .get(name)
            .cloned()
            .ok_or_else(|| ApiError::unknown_plugin(name))
    }
    fn pause<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<PluginView, ApiError>> {
        async move {
            let mut plugins = self.plugins.lock();
            let p = plugins
                .get_mut(name)
                .ok_or_else(|| ApiError::unknown_plugin(name))?;
            p.state = "paused".into();
            Ok(p.clone())
        }
        .boxed()
    }
    fn resume<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<PluginView, ApiError>> {
        async move {
            let mut plugins = self.plugins.lock();
            let p = plugins
                .get_mut(name)
                .ok_or_else(|| ApiError::unknown_plugin(name))?;
            p.state = "running".into();
            Ok(p.clone())
        }
        .boxed()
    }
    fn reset<'a>(
        &'a self,
        name: &'a str,
        _to: ResetTo,
        _keep_state: bool,
    ) -> BoxFuture<'a, Result<PluginView, ApiError>> {
        async move { self.plugin(name) }.boxed()
    }
    fn rollback<'a>(
        &'a self,
        name: &'a str,
        _v: Option<u32>,
    ) -> BoxFuture<'a, Result<PluginView, ApiError>> {
        async move { self.plugin(name) }.boxed()
    }
    fn delete<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), ApiError>> {
        async move {
            self.plugins
                .lock()
                .remove(name)
                .map(|_| ())
                .ok_or_else(|| ApiError::unknown_plugin(name))
        }
        .boxed()
    }
    fn rebuild<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<PluginView, ApiError>> {
        async move { self.plugin(name) }.boxed()
    }
    fn pond_get(&self, pond: &str, key: &[u8]) -> Result<Option<Vec<u8>>, ApiError> {
        if pond != "balances" {
            return Err(ApiError::unknown_plugin(pond));
        }
        Ok((key == b"acc-1").then(|| b"{\"balance\":10}".to_vec()))
    }
    fn pond_scan(
        &self,
        pond: &str,
        prefix: &[u8],
        _after: Option<&[u8]>,
        _limit: u32,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, ApiError> {
        Ok(self
            .pond_get(pond, b"acc-1")?
            .into_iter()
            .map(|v| (b"acc-1".to_vec(), v))
            .filter(|(k, _)| k.starts_with(prefix))
            .collect())
    }
    fn pond_query<'a>(
        &'a self,
        pond: &'a str,
        request: Vec<u8>,
    ) -> BoxFuture<'a, Result<Vec<u8>, ApiError>> {
        async move {
            self.pond_get(pond, b"")?;
            Ok(request)
        }
        .boxed()
    }
    fn submit<'a>(
        &'a self,
        service: &'a str,
        command: CommandRequest,
        wait: Option<Duration>,
    ) -> BoxFuture<'a, Result<CommandOutcome, ApiError>> {
        async move {
            if service != "bank" {
                return Err(ApiError::unknown_plugin(service));
            }
            Ok(match (command.name.as_str(), wait) {
                (_, None) => CommandOutcome::Accepted {
                    topic: "bank.commands".into(),
                    partition: 0,
                    offset: 7,
                },
                ("conflict", _) => CommandOutcome::Conflict {
                    expected: 1,
                    actual: 2,
                },
                ("reject", _) => CommandOutcome::Rejected {
                    code: "insufficient-funds".into(),
                    message: "no".into(),
                },
                _ => CommandOutcome::Applied {
                    events: vec![crate::runtime::Event {
                        name: "deposited".into(),
                        data: command.data,
                    }],
                    version: 1,
                },
            })
        }
        .boxed()
    }
    fn command_result(
        &self,
        _service: &str,
        _id: &str,
    ) -> Result<Option<CommandOutcome>, ApiError> {
        Ok(None)
    }
    fn metrics(&self) -> Vec<MetricFamily> {
        vec![]
    }
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        async {}.boxed()
    }
}
