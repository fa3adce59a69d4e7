//! The processor engine's Prometheus families, from its statuses:
//! throughput, errors, lag and committed offset per input partition, run
//! state, and the plugin call latency histogram.

use super::metrics::MetricFamily;
use crate::processor;

/// Prometheus families for every processor: throughput, errors, lag per
/// input partition, and the plugin call latency histogram.
pub(super) fn families(list: &[processor::ProcessorStatus]) -> Vec<MetricFamily> {
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
