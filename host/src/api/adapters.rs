//! The ports of [`super::backend`] over the real log and processor engine.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::ApiError;
use super::backend::{PartitionView, Rapids, TopicSpec, TopicView};
use crate::batch::{Record, RecordBatch};
use crate::log::{EventLog, TopicConfig, TopicInfo};

/// [`Rapids`] over any [`EventLog`] (the embedded `Log` in production).
pub struct LogRapids {
    log: Arc<dyn EventLog>,
}

impl LogRapids {
    pub fn new(log: Arc<dyn EventLog>) -> Self {
        LogRapids { log }
    }
}

fn view(info: TopicInfo) -> TopicView {
    TopicView {
        name: info.name,
        partitions: info
            .partitions
            .iter()
            .map(|p| PartitionView {
                partition: p.partition,
                start_offset: p.start_offset,
                end_offset: p.end_offset,
            })
            .collect(),
    }
}

impl Rapids for LogRapids {
    fn create_topic(&self, spec: &TopicSpec) -> Result<TopicView, ApiError> {
        let config = TopicConfig {
            partitions: spec.partitions,
            retention_ms: spec.retention_ms,
            retention_bytes: spec.retention_bytes,
            compaction: spec.compact,
            ..TopicConfig::default()
        };
        Ok(view(self.log.create_topic(&spec.name, config)?))
    }

    fn delete_topic(&self, name: &str) -> Result<(), ApiError> {
        Ok(self.log.delete_topic(name)?)
    }

    fn topics(&self) -> Vec<TopicView> {
        let mut topics: Vec<TopicView> = self.log.topics().into_iter().map(view).collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        topics
    }

    fn topic(&self, name: &str) -> Result<TopicView, ApiError> {
        Ok(view(self.log.topic(name)?))
    }

    fn partition_for(&self, topic: &str, key: Option<&[u8]>) -> Result<u32, ApiError> {
        Ok(self.log.partition_for(topic, key.unwrap_or_default())?)
    }

    fn append(&self, topic: &str, partition: u32, records: &[Record]) -> Result<u64, ApiError> {
        Ok(self.log.append(topic, partition, records)?.base_offset)
    }

    fn read(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<RecordBatch, ApiError> {
        Ok(self.log.read(topic, partition, offset, max_records, max_bytes)?)
    }

    fn wait_for<'a>(&'a self, topic: &'a str, partition: u32, offset: u64, timeout: Duration) -> BoxFuture<'a, ()> {
        async move {
            let Ok(mut end) = self.log.watch_end(topic, partition) else {
                return;
            };
            let wait = end.wait_for(|&e| e > offset);
            // A closed watch (topic deleted) or the timeout both end the wait.
            let _ = tokio::time::timeout(timeout, wait).await;
        }
        .boxed()
    }

    fn sync(&self) -> Result<(), ApiError> {
        Ok(self.log.flush()?)
    }
}

/// The engine of a server built without processors: every plugin, pond and
/// service route answers `503 unavailable`.
pub struct NoEngine;

fn no_engine<T>() -> Result<T, ApiError> {
    Err(ApiError::unavailable("this server has no processor engine"))
}

impl super::Engine for NoEngine {
    fn deploy(&self, _: serde_json::Value, _: Vec<u8>) -> BoxFuture<'_, Result<super::backend::PluginView, ApiError>> {
        async { no_engine() }.boxed()
    }
    fn plugins(&self) -> Result<Vec<super::backend::PluginView>, ApiError> {
        Ok(Vec::new())
    }
    fn plugin(&self, name: &str) -> Result<super::backend::PluginView, ApiError> {
        Err(ApiError::unknown_plugin(name))
    }
    fn pause<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<super::backend::PluginView, ApiError>> {
        async move { self.plugin(name) }.boxed()
    }
    fn resume<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<super::backend::PluginView, ApiError>> {
        async move { self.plugin(name) }.boxed()
    }
    fn reset<'a>(&'a self, name: &'a str, _: super::backend::ResetTo) -> BoxFuture<'a, Result<super::backend::PluginView, ApiError>> {
        async move { self.plugin(name) }.boxed()
    }
    fn rollback<'a>(&'a self, name: &'a str, _: Option<u32>) -> BoxFuture<'a, Result<super::backend::PluginView, ApiError>> {
        async move { self.plugin(name) }.boxed()
    }
    fn delete<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), ApiError>> {
        async move { self.plugin(name).map(|_| ()) }.boxed()
    }
    fn pond_get(&self, pond: &str, _: &[u8]) -> Result<Option<Vec<u8>>, ApiError> {
        Err(ApiError::unknown_plugin(pond))
    }
    fn pond_scan(&self, pond: &str, _: &[u8], _: Option<&[u8]>, _: u32) -> Result<Vec<(Vec<u8>, Vec<u8>)>, ApiError> {
        Err(ApiError::unknown_plugin(pond))
    }
    fn pond_query<'a>(&'a self, pond: &'a str, _: Vec<u8>) -> BoxFuture<'a, Result<Vec<u8>, ApiError>> {
        async move { Err(ApiError::unknown_plugin(pond)) }.boxed()
    }
    fn submit<'a>(
        &'a self,
        service: &'a str,
        _: super::backend::CommandRequest,
        _: Option<Duration>,
    ) -> BoxFuture<'a, Result<super::backend::CommandOutcome, ApiError>> {
        async move { Err(ApiError::unknown_plugin(service)) }.boxed()
    }
    fn command_result(&self, service: &str, _: &str) -> Result<Option<super::backend::CommandOutcome>, ApiError> {
        Err(ApiError::unknown_plugin(service))
    }
    fn owner_of(&self, _: &str) -> Option<String> {
        None
    }
    fn metrics(&self) -> Vec<super::backend::MetricFamily> {
        Vec::new()
    }
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        async {}.boxed()
    }
}
