//! Record routes: produce (single and batch, JSON or raw bytes, optionally
//! idempotent), read a partition from an offset with long-poll, and a
//! server-sent-events tail of a topic.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::codec::{self, RecordIn};
use super::idempotency::Placement;
use super::{ApiError, AppState, blocking, idempotency, names, says_json, wait_for_record};
use crate::batch::Record;
use crate::log::{EventLog, TopicMeta};
use crate::processor::Engine;

/// Default and largest byte budget of one read.
const DEFAULT_READ_BYTES: usize = 1 << 20;
const MAX_READ_BYTES: usize = 16 << 20;
/// Records fetched per step of a tail.
const TAIL_CHUNK: usize = 500;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ProduceQuery {
    /// Raw produce: the record's key.
    key: Option<String>,
    /// Raw produce: force a partition.
    partition: Option<u32>,
}

/// Raw produce: the body is the value; `Weir-Header: name=value` request
/// headers become record headers.
fn raw_record(headers: &HeaderMap, key: Option<String>, body: Bytes) -> Result<Record, ApiError> {
    let mut record_headers = Vec::new();
    for h in headers.get_all("weir-header") {
        let text = h.to_str().map_err(|_| {
            ApiError::bad_request("invalid_record", "Weir-Header must be visible ASCII")
        })?;
        let (name, value) = text.split_once('=').ok_or_else(|| {
            ApiError::bad_request("invalid_record", "Weir-Header must be name=value")
        })?;
        record_headers.push((name.trim().to_owned(), value.as_bytes().to_vec()));
    }
    Ok(Record {
        key: key.map(String::into_bytes).unwrap_or_default(),
        value: body.to_vec(),
        headers: record_headers,
        timestamp: codec::now_ms(),
    })
}

/// The idempotency key of a request and the parts of it already written.
struct Keyed<'a> {
    key: &'a str,
    written: &'a idempotency::Written,
    /// The request is a batch (decides the shape of its answer).
    batch: bool,
}

/// Records grouped by partition: (request index, record) per partition.
type Groups = BTreeMap<u32, Vec<(usize, Record)>>;

/// Each record's forced or key-chosen partition. Keyless records are
/// spread round-robin, except in a keyed request: there they all go to the
/// partition its idempotency key hashes to, so a retry places them again
/// where the first attempt did.
fn place(
    log: &dyn EventLog,
    topic: &TopicMeta,
    records: Vec<(Option<u32>, Record)>,
    idempotency_key: Option<&str>,
) -> Result<Groups, ApiError> {
    let partitions = topic.partitions();
    let sticky = idempotency_key
        .map(|k| log.partition_for(&topic.name, k.as_bytes()))
        .transpose()?;
    let mut groups = Groups::new();
    for (i, (forced, record)) in records.into_iter().enumerate() {
        let p = match (forced, sticky) {
            (Some(p), _) if p >= partitions => {
                return Err(ApiError::unknown_partition(&topic.name, p, partitions));
            }
            (Some(p), _) => p,
            (None, Some(p)) if record.key.is_empty() => p,
            // An empty key is spread round-robin by the log.
            (None, _) => log.partition_for(&topic.name, &record.key)?,
        };
        groups.entry(p).or_default().push((i, record));
    }
    Ok(groups)
}

/// Append records, one append per partition; returns (partition, offset)
/// per record, in request order, and whether anything was appended. In a
/// keyed request each partition's part carries the mark (see
/// `idempotency`) on its first record, in the same append, and a part
/// already written by an earlier attempt is not appended again: its
/// records answer with their first offsets.
fn append_all(
    engine: &Engine,
    topic: &TopicMeta,
    mut groups: Groups,
    keyed: Option<Keyed<'_>>,
) -> Result<(Vec<(u32, u64)>, bool), ApiError> {
    // Held while appending: an abandoned attempt of the same key may still run.
    let mut written = keyed.as_ref().map(|k| k.written.lock());
    if let (Some(k), Some(written)) = (&keyed, &written) {
        let sizes = groups.iter().map(|(p, g)| (*p, g.len())).collect();
        written.check_retry(&sizes)?;
        let total = groups.values().map(Vec::len).sum();
        let parts = groups.len();
        for group in groups.values_mut() {
            let part_records = group.len();
            if let Some((_, first)) = group.first_mut() {
                first.headers.push(idempotency::mark(
                    k.key,
                    total,
                    k.batch,
                    parts,
                    part_records,
                ));
            }
        }
    }
    let mut placed = Vec::new();
    let mut appended = false;
    for (p, group) in groups {
        let (indexes, recs): (Vec<usize>, Vec<Record>) = group.into_iter().unzip();
        let done = written.as_ref().and_then(|w| w.get(p));
        let first = match done {
            Some(part) => part.first,
            None => {
                if let Some(w) = written.as_mut() {
                    w.before_append()?;
                }
                let first = engine.append_from_client(&topic.name, p, &recs)?;
                appended = true;
                if let Some(w) = written.as_mut() {
                    w.appended(
                        p,
                        idempotency::Part {
                            first,
                            records: recs.len() as u64,
                        },
                    );
                }
                first
            }
        };
        placed.extend(
            indexes
                .into_iter()
                .enumerate()
                .map(|(j, i)| (i, (p, first + j as u64))),
        );
    }
    placed.sort_by_key(|(i, _)| *i);
    Ok((placed.into_iter().map(|(_, at)| at).collect(), appended))
}

pub(super) async fn produce(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<ProduceQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Path(topic) = path?;
    names::validate("topic", &topic)?;
    let Query(query) = query?;
    let body = body?;
    let now = codec::now_ms();
    let (batch, records) = if says_json(&headers) {
        if query.key.is_some() || query.partition.is_some() {
            return Err(ApiError::bad_request(
                "invalid_query",
                "key and partition query parameters are for raw bodies; put them in the JSON record",
            ));
        }
        let (batch, records) = codec::parse_produce_body(&body)?;
        let records = records
            .into_iter()
            .map(|r: RecordIn| r.into_record(now))
            .collect::<Result<Vec<_>, _>>()?;
        (batch, records)
    } else {
        (
            false,
            vec![(query.partition, raw_record(&headers, query.key, body)?)],
        )
    };
    let view = state.log.topic_meta(&topic)?;
    let count = records.len() as u64;
    let bytes: u64 = records
        .iter()
        .map(|(_, r)| (r.key.len() + r.value.len()) as u64)
        .sum();

    let idempotency_key = headers
        .get("idempotency-key")
        .map(|v| {
            v.to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= 256)
                .map(str::to_owned)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_idempotency_key",
                        "Idempotency-Key must be 1..=256 visible ASCII characters",
                    )
                })
        })
        .transpose()?;
    if records.iter().any(|(_, r)| idempotency::carries_mark(r)) {
        return Err(ApiError::bad_request(
            "invalid_record",
            format!("the record header {} is reserved", idempotency::MARK_HEADER),
        ));
    }
    let (log, engine) = (state.log.clone(), state.engine.clone());
    let incarnation = view.clone();
    let key = idempotency_key.clone();
    let do_produce = move |written: Option<idempotency::Written>| async move {
        let (placed, appended) = blocking(move || {
            let groups = place(&*log, &view, records, key.as_deref())?;
            let keyed = match (&key, &written) {
                (Some(key), Some(written)) => Some(Keyed {
                    key,
                    written,
                    batch,
                }),
                _ => None,
            };
            append_all(&engine, &view, groups, keyed)
        })
        .await?;
        Ok::<_, ApiError>((Placement::new(batch, placed), appended))
    };
    let (answer, replayed) = match idempotency_key {
        Some(key) => {
            state
                .idempotency
                .run(&state.log, &incarnation, &key, |written| {
                    do_produce(Some(written))
                })
                .await?
        }
        None => (do_produce(None).await?.0, false),
    };
    if !replayed {
        state.http.produced(&topic, count, bytes);
    }
    let mut response = Json(answer.answer(&topic)).into_response();
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// Where to start reading: a number, `earliest` or `latest`.
fn resolve_offset(text: Option<&str>, start: u64, end: u64, default: u64) -> Result<u64, ApiError> {
    match text {
        None => Ok(default),
        Some("earliest" | "beginning") => Ok(start),
        Some("latest" | "end") => Ok(end),
        Some(n) => n.parse::<u64>().map_err(|_| {
            ApiError::bad_request(
                "invalid_offset",
                format!("offset must be a number, 'earliest' or 'latest', not {n:?}"),
            )
        }),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReadQuery {
    offset: Option<String>,
    limit: Option<usize>,
    max_bytes: Option<usize>,
    /// Long-poll: wait up to this long for a record at `offset`.
    wait_ms: Option<u64>,
}

pub(super) async fn read(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<ReadQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path((topic, partition)) = path?;
    names::validate("topic", &topic)?;
    let Query(q) = query?;
    let view = state.log.topic_meta(&topic)?;
    let partition: u32 = partition.parse().map_err(|_| {
        ApiError::bad_request(
            "invalid_partition",
            format!("partition must be a number, not {partition:?}"),
        )
    })?;
    if partition >= view.partitions() {
        return Err(ApiError::unknown_partition(
            &topic,
            partition,
            view.partitions(),
        ));
    }
    let (start, end) = state.log.bounds(&topic, partition)?;
    let offset = resolve_offset(q.offset.as_deref(), start, end, start)?;
    if offset > end || offset < start {
        return Err(ApiError::invalid_offset(format!(
            "offset {offset} is outside {start}..={end} of {topic}/{partition}"
        )));
    }
    let limit = q
        .limit
        .unwrap_or(100)
        .clamp(1, state.config.max_read_records);
    let max_bytes = q
        .max_bytes
        .unwrap_or(DEFAULT_READ_BYTES)
        .clamp(1, MAX_READ_BYTES);
    let wait = Duration::from_millis(q.wait_ms.unwrap_or(0)).min(state.config.max_wait);
    if offset == end && !wait.is_zero() {
        let mut shutting_down = state.shutting_down.clone();
        tokio::select! {
            () = wait_for_record(&*state.log, &topic, partition, offset, wait) => {}
            _ = shutting_down.wait_for(|s| *s) => {}
        }
    }
    let log = state.log.clone();
    let t = topic.clone();
    let batch = blocking(move || log.read(&t, partition, offset, limit, max_bytes)).await?;
    let records: Vec<Value> = (0..batch.len())
        .map(|i| codec::record_json(&batch, i))
        .collect();
    let next_offset = batch.offsets.last().map_or(offset, |o| o + 1);
    let end_offset = state
        .log
        .end_offset(&topic, partition)
        .unwrap_or(next_offset);
    Ok(Json(json!({
        "topic": topic,
        "partition": partition,
        "records": records,
        "next_offset": next_offset,
        "end_offset": end_offset,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TailQuery {
    /// Only this partition (default: all).
    partition: Option<u32>,
    /// `latest` (default), `earliest` or an offset (with one partition).
    from: Option<String>,
}

/// Follow one partition, sending each record as an SSE event until the
/// client goes away or the server shuts down.
async fn follow_partition(
    state: AppState,
    topic: String,
    partition: u32,
    mut offset: u64,
    tx: mpsc::Sender<Event>,
) {
    let mut shutting_down = state.shutting_down.clone();
    loop {
        let log = state.log.clone();
        let t = topic.clone();
        let read =
            blocking(move || log.read(&t, partition, offset, TAIL_CHUNK, DEFAULT_READ_BYTES)).await;
        let batch = match read {
            Ok(batch) => batch,
            Err(e) => {
                let _ = tx
                    .send(Event::default().event("error").data(e.body().to_string()))
                    .await;
                return;
            }
        };
        for i in 0..batch.len() {
            let mut record = codec::record_json(&batch, i);
            record["partition"] = json!(partition);
            let event = Event::default()
                .event("record")
                .id(format!("{partition}:{}", batch.offsets[i]))
                .data(record.to_string());
            if tx.send(event).await.is_err() {
                return;
            }
        }
        if let Some(last) = batch.offsets.last() {
            offset = last + 1;
            continue;
        }
        tokio::select! {
            () = wait_for_record(&*state.log, &topic, partition, offset, Duration::from_secs(15)) => {}
            _ = shutting_down.wait_for(|s| *s) => return,
            () = tx.closed() => return,
        }
    }
}

pub(super) async fn tail(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<TailQuery>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let Path(topic) = path?;
    names::validate("topic", &topic)?;
    let Query(q) = query?;
    let view = state.log.topic(&topic)?;
    let count = view.partitions.len() as u32;
    let chosen: Vec<_> = match q.partition {
        Some(p) if p >= count => return Err(ApiError::unknown_partition(&topic, p, count)),
        Some(p) => vec![view.partitions[p as usize]],
        None => view.partitions.clone(),
    };
    if chosen.len() > 1 && q.from.as_deref().is_some_and(|f| f.parse::<u64>().is_ok()) {
        return Err(ApiError::bad_request(
            "invalid_offset",
            "a numeric 'from' needs a single 'partition'",
        ));
    }
    let (tx, rx) = mpsc::channel::<Event>(256);
    for p in chosen {
        let offset = resolve_offset(
            q.from.as_deref(),
            p.start_offset,
            p.end_offset,
            p.end_offset,
        )?;
        if offset > p.end_offset || offset < p.start_offset {
            return Err(ApiError::invalid_offset(format!(
                "offset {offset} is outside {}..={} of {topic}/{}",
                p.start_offset, p.end_offset, p.partition
            )));
        }
        tokio::spawn(follow_partition(
            state.clone(),
            topic.clone(),
            p.partition,
            offset,
            tx.clone(),
        ));
    }
    drop(tx);
    let stream =
        futures::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) },
        );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::resolve_offset;

    #[test]
    fn offsets_resolve() {
        assert_eq!(resolve_offset(None, 3, 9, 3).unwrap(), 3);
        assert_eq!(resolve_offset(Some("earliest"), 3, 9, 0).unwrap(), 3);
        assert_eq!(resolve_offset(Some("latest"), 3, 9, 0).unwrap(), 9);
        assert_eq!(resolve_offset(Some("7"), 3, 9, 0).unwrap(), 7);
        assert_eq!(
            resolve_offset(Some("-1"), 3, 9, 0).unwrap_err().code,
            "invalid_offset"
        );
    }
}
