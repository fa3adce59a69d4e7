//! `/healthz` and `/metrics` (Prometheus text format 0.0.4): HTTP request
//! counts and latency, produce rates per topic, partition end offsets, and
//! whatever the processor engine reports (lag per processor partition,
//! errors, plugin call latency).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use parking_lot::Mutex;
use serde_json::{Value, json};

use super::AppState;

/// Metric labels as (name, value) pairs.
pub(crate) type Labels = Vec<(String, String)>;

/// One Prometheus metric family.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MetricFamily {
    pub name: String,
    pub help: String,
    /// `counter`, `gauge`, `histogram` or `summary`.
    pub kind: &'static str,
    /// (sample name suffix such as `""`, `"_bucket"`, `"_sum"`; labels; value)
    pub samples: Vec<(String, Labels, f64)>,
}

#[derive(Default)]
struct RequestStats {
    count: u64,
    seconds: f64,
}

/// Counters kept by the HTTP layer itself.
#[derive(Default)]
pub(crate) struct HttpMetrics {
    requests: Mutex<BTreeMap<(String, String, u16), RequestStats>>,
    produced: Mutex<BTreeMap<String, (u64, u64)>>,
}

impl HttpMetrics {
    pub(crate) fn observe(&self, method: &str, route: &str, status: u16, took: Duration) {
        let mut requests = self.requests.lock();
        let stats = requests
            .entry((method.to_owned(), route.to_owned(), status))
            .or_default();
        stats.count += 1;
        stats.seconds += took.as_secs_f64();
    }

    pub(crate) fn produced(&self, topic: &str, records: u64, bytes: u64) {
        let mut produced = self.produced.lock();
        let entry = produced.entry(topic.to_owned()).or_default();
        entry.0 += records;
        entry.1 += bytes;
    }

    fn families(&self) -> Vec<MetricFamily> {
        let requests = self.requests.lock();
        let labels = |(m, r, s): &(String, String, u16)| {
            vec![
                ("method".to_owned(), m.clone()),
                ("route".to_owned(), r.clone()),
                ("status".to_owned(), s.to_string()),
            ]
        };
        let produced = self.produced.lock();
        let topic = |t: &String| vec![("topic".to_owned(), t.clone())];
        vec![
            MetricFamily {
                name: "weir_http_requests_total".into(),
                help: "HTTP requests answered, by route and status".into(),
                kind: "counter",
                samples: requests
                    .iter()
                    .map(|(k, s)| (String::new(), labels(k), s.count as f64))
                    .collect(),
            },
            MetricFamily {
                name: "weir_http_request_seconds_total".into(),
                help: "Time spent answering HTTP requests, by route and status".into(),
                kind: "counter",
                samples: requests
                    .iter()
                    .map(|(k, s)| (String::new(), labels(k), s.seconds))
                    .collect(),
            },
            MetricFamily {
                name: "weir_produced_records_total".into(),
                help: "Records appended through the HTTP API, by topic".into(),
                kind: "counter",
                samples: produced
                    .iter()
                    .map(|(t, (n, _))| (String::new(), topic(t), *n as f64))
                    .collect(),
            },
            MetricFamily {
                name: "weir_produced_bytes_total".into(),
                help: "Key and value bytes appended through the HTTP API, by topic".into(),
                kind: "counter",
                samples: produced
                    .iter()
                    .map(|(t, (_, b))| (String::new(), topic(t), *b as f64))
                    .collect(),
            },
        ]
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Render families in the Prometheus text format.
pub(crate) fn render(families: &[MetricFamily]) -> String {
    let mut out = String::new();
    for f in families {
        let _ = writeln!(out, "# HELP {} {}", f.name, f.help.replace('\n', " "));
        let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind);
        for (suffix, labels, value) in &f.samples {
            out.push_str(&f.name);
            out.push_str(suffix);
            if !labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{k}=\"{}\"", escape(v));
                }
                out.push('}');
            }
            let _ = writeln!(out, " {value}");
        }
    }
    out
}

pub(super) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut families = state.http.families();
    let topics = state.log.topics();
    families.push(MetricFamily {
        name: "weir_partition_end_offset".into(),
        help: "Next offset to be written, per topic partition".into(),
        kind: "gauge",
        samples: topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(|p| {
                    (
                        String::new(),
                        vec![
                            ("topic".to_owned(), t.name.clone()),
                            ("partition".to_owned(), p.partition.to_string()),
                        ],
                        p.end_offset as f64,
                    )
                })
            })
            .collect(),
    });
    let cache = state.idempotency.usage();
    families.push(MetricFamily {
        name: "weir_idempotency_cache_bytes".into(),
        help: "Memory held by remembered idempotency keys and their answers".into(),
        kind: "gauge",
        samples: vec![(String::new(), vec![], cache.bytes as f64)],
    });
    families.push(MetricFamily {
        name: "weir_idempotency_cache_keys".into(),
        help: "Idempotency keys remembered".into(),
        kind: "gauge",
        samples: vec![(String::new(), vec![], cache.keys as f64)],
    });
    families.push(MetricFamily {
        name: "weir_uptime_seconds".into(),
        help: "Seconds since the server started".into(),
        kind: "gauge",
        samples: vec![(String::new(), vec![], state.started.elapsed().as_secs_f64())],
    });
    // Processor metrics read checkpoints from the store: off the async threads.
    let engine = state.engine.clone();
    let statuses = super::blocking(move || Ok::<_, super::ApiError>(engine.list())).await;
    match statuses.map(|list| super::processor_metrics::families(&list)) {
        Ok(processor_families) => families.extend(processor_families),
        Err(e) => tracing::error!("processor metrics unavailable: {e}"),
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(&families),
    )
}

/// `200 {"status": "ok"}`, or `503` once shutdown began (so load balancers
/// stop sending traffic while the server drains).
pub(super) async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let stopping = *state.shutting_down.borrow();
    let status = if stopping {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (
        status,
        Json(json!({
            "status": if stopping { "shutting_down" } else { "ok" },
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": state.started.elapsed().as_secs(),
        })),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let text = render(&[MetricFamily {
            name: "x_total".into(),
            help: "help".into(),
            kind: "counter",
            samples: vec![
                (String::new(), vec![("a".into(), "q\"\n".into())], 2.0),
                ("_sum".into(), vec![], 0.5),
            ],
        }]);
        assert_eq!(
            text,
            "# HELP x_total help\n# TYPE x_total counter\nx_total{a=\"q\\\"\\n\"} 2\nx_total_sum 0.5\n"
        );
    }
}
