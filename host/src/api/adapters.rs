//! The ports of [`super::backend`] over the real log ([`LogRapids`]) and
//! processor engine ([`ProcessorEngine`]).

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::ApiError;
use super::backend::{
    CommandOutcome, CommandRequest, Engine, LastErrorView, MetricFamily, PartitionView, PluginView,
    ProcessorPartitionView, Rapids, ResetTo, TopicSpec, TopicView, VersionView,
};
use crate::batch::{Record, RecordBatch};
use crate::log::{EventLog, TopicConfig, TopicInfo};
use crate::processor;

/// [`Rapids`] over any [`EventLog`] (the embedded `Log` in production).
/// Client appends and topic deletes pass the processors' ownership rule.
pub struct LogRapids {
    log: Arc<dyn EventLog>,
    ownership: Arc<processor::Ownership>,
}

impl LogRapids {
    pub fn new(log: Arc<dyn EventLog>, ownership: Arc<processor::Ownership>) -> Self {
        LogRapids { log, ownership }
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
        self.ownership
            .delete_topic(name, || Ok(self.log.delete_topic(name)?))
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
        self.ownership.client_write(topic, || {
            Ok(self.log.append(topic, partition, records)?.base_offset)
        })
    }

    fn read(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<RecordBatch, ApiError> {
        Ok(self
            .log
            .read(topic, partition, offset, max_records, max_bytes)?)
    }

    fn wait_for<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
        offset: u64,
        timeout: Duration,
    ) -> BoxFuture<'a, ()> {
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

/// [`Engine`] over the processor engine.
pub struct ProcessorEngine {
    engine: Arc<processor::Engine>,
}

impl ProcessorEngine {
    pub fn new(engine: Arc<processor::Engine>) -> Self {
        ProcessorEngine { engine }
    }

    /// Run a blocking engine call off the async threads.
    fn call<'a, T: Send + 'static>(
        &'a self,
        f: impl FnOnce(&processor::Engine) -> Result<T, processor::EngineError> + Send + 'static,
    ) -> BoxFuture<'a, Result<T, ApiError>> {
        let engine = self.engine.clone();
        async move { Ok(tokio::task::spawn_blocking(move || f(&engine)).await??) }.boxed()
    }
}

fn plugin_view(s: processor::ProcessorStatus) -> PluginView {
    let (inputs, outputs, manifest) = match &s.manifest {
        Some(m) => (
            m.inputs.clone(),
            m.outputs.clone(),
            serde_json::to_value(m).unwrap_or_default(),
        ),
        None => (Vec::new(), Vec::new(), serde_json::Value::Null),
    };
    let state_reason = match &s.state {
        processor::RunState::Stopped { reason } | processor::RunState::Failed { reason } => {
            Some(reason.clone())
        }
        _ => None,
    };
    PluginView {
        name: s.name,
        kind: s.kind.world().to_owned(),
        state: s.state.as_str().to_owned(),
        state_reason,
        active_version: s.active_version,
        inputs,
        outputs,
        manifest,
        versions: s
            .versions
            .iter()
            .map(|v| VersionView {
                version: v.version,
                sha256: v.sha256.clone(),
                deployed_at_ms: v.deployed_at_ms,
                active: v.version == s.active_version,
            })
            .collect(),
        partitions: s
            .partitions
            .iter()
            .map(|p| ProcessorPartitionView {
                topic: p.topic.clone(),
                partition: p.partition,
                committed_offset: p.committed_offset,
                end_offset: p.end_offset,
                lag: p.lag,
            })
            .collect(),
        events_in: s.metrics.events_in,
        events_out: s.metrics.events_out,
        error_count: s.metrics.errors,
        dead_lettered: s.metrics.dead_lettered,
        last_error: s.last_error.map(|e| LastErrorView {
            message: e.message,
            at_ms: e.at_ms,
            topic: e.topic,
            partition: e.partition,
            offset: e.offset,
        }),
        generation: s.read_generation,
        rebuilding_generation: s.rebuilding_generation,
    }
}

/// Prometheus families for every processor: throughput, errors, lag per
/// input partition, and the plugin call latency histogram.
fn processor_metrics(list: &[processor::ProcessorStatus]) -> Vec<MetricFamily> {
    let p = |s: &processor::ProcessorStatus| vec![("processor".to_owned(), s.name.clone())];
    let counter =
        |name: &str, help: &str, get: fn(&processor::MetricsSnapshot) -> u64| MetricFamily {
            name: name.into(),
            help: help.into(),
            kind: "counter",
            samples: list
                .iter()
                .map(|s| (String::new(), p(s), get(&s.metrics) as f64))
                .collect(),
        };
    let partition_labels = |s: &processor::ProcessorStatus, x: &processor::PartitionStatus| {
        vec![
            ("processor".to_owned(), s.name.clone()),
            ("topic".to_owned(), x.topic.clone()),
            ("partition".to_owned(), x.partition.to_string()),
        ]
    };
    let mut latency = Vec::new();
    for s in list {
        let m = &s.metrics;
        for (i, bound) in processor::LATENCY_BUCKETS_US.iter().enumerate() {
            let mut labels = p(s);
            labels.push(("le".into(), format!("{}", *bound as f64 / 1e6)));
            latency.push((
                "_bucket".to_owned(),
                labels,
                m.latency_buckets.get(i).copied().unwrap_or(0) as f64,
            ));
        }
        let mut labels = p(s);
        labels.push(("le".into(), "+Inf".into()));
        latency.push(("_bucket".to_owned(), labels, m.latency_count as f64));
        latency.push(("_sum".to_owned(), p(s), m.latency_sum_us as f64 / 1e6));
        latency.push(("_count".to_owned(), p(s), m.latency_count as f64));
    }
    vec![
        counter(
            "weir_processor_events_in_total",
            "Events handed to the plugin",
            |m| m.events_in,
        ),
        counter(
            "weir_processor_events_out_total",
            "Records the processor emitted",
            |m| m.events_out,
        ),
        counter("weir_processor_batches_total", "Batches processed", |m| {
            m.batches
        }),
        counter(
            "weir_processor_errors_total",
            "Failed plugin calls (traps, timeouts, failures), retries included",
            |m| m.errors,
        ),
        counter(
            "weir_processor_dead_lettered_total",
            "Events sent to the dead-letter topic",
            |m| m.dead_lettered,
        ),
        counter(
            "weir_processor_skipped_total",
            "Events dropped by error policy skip",
            |m| m.skipped,
        ),
        counter(
            "weir_processor_commits_total",
            "Store commits (outputs + state + checkpoint)",
            |m| m.commits,
        ),
        counter(
            "weir_processor_reapplied_total",
            "Pond batches applied again serially because another partition changed state they read",
            |m| m.reapplied,
        ),
        MetricFamily {
            name: "weir_processor_lag".into(),
            help: "Records not yet processed, per processor input partition".into(),
            kind: "gauge",
            samples: list
                .iter()
                .flat_map(|s| {
                    s.partitions
                        .iter()
                        .map(move |x| (String::new(), partition_labels(s, x), x.lag as f64))
                })
                .collect(),
        },
        MetricFamily {
            name: "weir_processor_committed_offset".into(),
            help: "Next input offset to process, per processor input partition".into(),
            kind: "gauge",
            samples: list
                .iter()
                .flat_map(|s| {
                    s.partitions.iter().map(move |x| {
                        (
                            String::new(),
                            partition_labels(s, x),
                            x.committed_offset as f64,
                        )
                    })
                })
                .collect(),
        },
        MetricFamily {
            name: "weir_processor_running".into(),
            help: "1 when the processor is running, 0 when paused, stopped or failed".into(),
            kind: "gauge",
            samples: list
                .iter()
                .map(|s| {
                    (
                        String::new(),
                        p(s),
                        f64::from(u8::from(s.state == processor::RunState::Running)),
                    )
                })
                .collect(),
        },
        MetricFamily {
            name: "weir_plugin_call_seconds".into(),
            help: "Latency of plugin calls (one per batch or command)".into(),
            kind: "histogram",
            samples: latency,
        },
    ]
}

impl Engine for ProcessorEngine {
    fn deploy(
        &self,
        manifest: serde_json::Value,
        component: Vec<u8>,
    ) -> BoxFuture<'_, Result<PluginView, ApiError>> {
        let fut = self.call(move |e| e.deploy(manifest, &component));
        async move { Ok(plugin_view(fut.await?)) }.boxed()
    }
    fn plugins(&self) -> Result<Vec<PluginView>, ApiError> {
        Ok(self.engine.list().into_iter().map(plugin_view).collect())
    }
    fn plugin(&self, name: &str) -> Result<PluginView, ApiError> {
        Ok(plugin_view(self.engine.inspect(name)?))
    }
    fn pause<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<PluginView, ApiError>> {
        let name = name.to_owned();
        let fut = self.call(move |e| e.pause(&name));
        async move { Ok(plugin_view(fut.await?)) }.boxed()
    }
    fn resume<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<PluginView, ApiError>> {
        let name = name.to_owned();
        let fut = self.call(move |e| e.resume(&name));
        async move { Ok(plugin_view(fut.await?)) }.boxed()
    }
    fn reset<'a>(
        &'a self,
        name: &'a str,
        to: ResetTo,
        keep_state: bool,
    ) -> BoxFuture<'a, Result<PluginView, ApiError>> {
        let name = name.to_owned();
        let fut = self.call(move |e| e.reset(&name, to, keep_state));
        async move { Ok(plugin_view(fut.await?)) }.boxed()
    }
    fn rollback<'a>(
        &'a self,
        name: &'a str,
        version: Option<u32>,
    ) -> BoxFuture<'a, Result<PluginView, ApiError>> {
        let name = name.to_owned();
        let fut = self.call(move |e| e.rollback(&name, version));
        async move { Ok(plugin_view(fut.await?)) }.boxed()
    }
    fn delete<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), ApiError>> {
        let name = name.to_owned();
        self.call(move |e| e.delete(&name))
    }
    fn rebuild<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<PluginView, ApiError>> {
        let name = name.to_owned();
        let fut = self.call(move |e| e.rebuild(&name));
        async move { Ok(plugin_view(fut.await?)) }.boxed()
    }
    fn pond_get(&self, pond: &str, key: &[u8]) -> Result<Option<Vec<u8>>, ApiError> {
        Ok(self.engine.pond_get(pond, key)?)
    }
    fn pond_scan(
        &self,
        pond: &str,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: u32,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, ApiError> {
        Ok(self
            .engine
            .pond_scan(pond, prefix, start_after, limit as usize)?)
    }
    fn pond_query<'a>(
        &'a self,
        pond: &'a str,
        request: Vec<u8>,
    ) -> BoxFuture<'a, Result<Vec<u8>, ApiError>> {
        let pond = pond.to_owned();
        let fut = self.call(move |e| e.pond_query(&pond, &request));
        async move {
            fut.await?.map_err(|message| {
                ApiError::new(
                    axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                    "query_failed",
                    message,
                )
            })
        }
        .boxed()
    }
    fn submit<'a>(
        &'a self,
        service: &'a str,
        command: CommandRequest,
        wait: Option<Duration>,
    ) -> BoxFuture<'a, Result<CommandOutcome, ApiError>> {
        match wait {
            Some(timeout) => async move {
                Ok(self
                    .engine
                    .submit_and_wait(service, command, timeout)
                    .await?)
            }
            .boxed(),
            None => {
                let service = service.to_owned();
                self.call(move |e| e.submit(&service, &command))
            }
        }
    }
    fn command_result(&self, service: &str, id: &str) -> Result<Option<CommandOutcome>, ApiError> {
        Ok(self.engine.command_result(service, id)?)
    }
    fn metrics(&self) -> Vec<MetricFamily> {
        processor_metrics(&self.engine.list())
    }
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        let engine = self.engine.clone();
        async move {
            if let Err(e) = tokio::task::spawn_blocking(move || engine.shutdown()).await {
                tracing::error!("engine shutdown panicked: {e}");
            }
        }
        .boxed()
    }
}
