//! How records travel as JSON, losslessly and still readable.
//!
//! A record's bytes are shown as JSON when they are JSON (`value`), as text
//! when they are UTF-8 but not JSON (`value_text`), and as base64 otherwise
//! (`value_base64`). Keys are `key` (UTF-8) or `key_base64`; header values are
//! `value` (UTF-8) or `value_base64`. Producing accepts the same fields, so
//! what a reader gets can be produced again unchanged.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::error::ApiError;
use crate::batch::{Record, RecordBatch};

/// A record as a client produces it (JSON form).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordIn {
    pub key: Option<String>,
    pub key_base64: Option<String>,
    pub value: Option<Value>,
    pub value_text: Option<String>,
    pub value_base64: Option<String>,
    #[serde(default)]
    pub headers: Option<HeadersIn>,
    /// Milliseconds since the Unix epoch; the server's clock when absent.
    #[serde(default, deserialize_with = "super::whole::option")]
    pub timestamp: Option<i64>,
    /// Force a partition instead of hashing the key.
    #[serde(default, deserialize_with = "super::whole::option")]
    pub partition: Option<u32>,
}

/// Headers as `{"name": "value"}` or `[{"name": .., "value" | "value_base64": ..}]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum HeadersIn {
    Map(Map<String, Value>),
    List(Vec<HeaderIn>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderIn {
    pub name: String,
    pub value: Option<String>,
    pub value_base64: Option<String>,
}

fn b64(field: &str, text: &str) -> Result<Vec<u8>, ApiError> {
    B64.decode(text).map_err(|e| {
        ApiError::bad_request(
            "invalid_record",
            format!("{field} is not valid base64: {e}"),
        )
    })
}

fn one_of<T>(field: &str, options: [Option<T>; 3]) -> Result<Option<T>, ApiError> {
    let mut given = options.into_iter().flatten();
    let first = given.next();
    if given.next().is_some() {
        return Err(ApiError::bad_request(
            "invalid_record",
            format!("give only one of {field}, {field}_text, {field}_base64"),
        ));
    }
    Ok(first)
}

impl RecordIn {
    /// The record to append, with `now_ms` as the default timestamp.
    pub fn into_record(self, now_ms: i64) -> Result<(Option<u32>, Record), ApiError> {
        let key = match (self.key, self.key_base64) {
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_request(
                    "invalid_record",
                    "give only one of key, key_base64",
                ));
            }
            (Some(k), None) => k.into_bytes(),
            (None, Some(k)) => b64("key_base64", &k)?,
            (None, None) => Vec::new(),
        };
        let value = one_of(
            "value",
            [
                self.value.map(|v| Ok(v.to_string().into_bytes())),
                self.value_text.map(|t| Ok(t.into_bytes())),
                self.value_base64.map(|t| b64("value_base64", &t)),
            ],
        )?
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_record",
                "a record needs value, value_text or value_base64",
            )
        })??;
        let headers = match self.headers {
            None => Vec::new(),
            Some(HeadersIn::Map(map)) => map
                .into_iter()
                .map(|(name, v)| match v {
                    Value::String(s) => Ok((name, s.into_bytes())),
                    other => Err(ApiError::bad_request(
                        "invalid_record",
                        format!("header {name:?} must be a string, not {other}"),
                    )),
                })
                .collect::<Result<_, _>>()?,
            Some(HeadersIn::List(list)) => list
                .into_iter()
                .map(|h| match (h.value, h.value_base64) {
                    (Some(v), None) => Ok((h.name, v.into_bytes())),
                    (None, Some(v)) => Ok((h.name, b64("header value_base64", &v)?)),
                    _ => Err(ApiError::bad_request(
                        "invalid_record",
                        format!(
                            "header {:?} needs exactly one of value, value_base64",
                            h.name
                        ),
                    )),
                })
                .collect::<Result<_, _>>()?,
        };
        Ok((
            self.partition,
            Record {
                key,
                value,
                headers,
                timestamp: self.timestamp.unwrap_or(now_ms),
            },
        ))
    }
}

/// A produce body: one record, or `{"records": [...]}`.
pub fn parse_produce_body(body: &[u8]) -> Result<(bool, Vec<RecordIn>), ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(ApiError::malformed_json)?;
    let batch = value.get("records").is_some();
    if batch {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Batch {
            records: Vec<RecordIn>,
        }
        let b: Batch = serde_json::from_value(value).map_err(ApiError::malformed_json)?;
        if b.records.is_empty() {
            return Err(ApiError::bad_request("invalid_record", "records is empty"));
        }
        Ok((true, b.records))
    } else {
        let r: RecordIn = serde_json::from_value(value).map_err(ApiError::malformed_json)?;
        Ok((false, vec![r]))
    }
}

/// Bytes as the most readable lossless JSON field: (suffix, value).
fn show_bytes(bytes: &[u8], allow_json: bool) -> (&'static str, Value) {
    if allow_json && let Ok(v) = serde_json::from_slice::<Value>(bytes) {
        return ("", v);
    }
    match std::str::from_utf8(bytes) {
        Ok(s) if allow_json => ("_text", Value::String(s.to_owned())),
        Ok(s) => ("", Value::String(s.to_owned())),
        Err(_) => ("_base64", Value::String(B64.encode(bytes))),
    }
}

/// Record `i` of a batch as JSON.
pub fn record_json(batch: &RecordBatch, i: usize) -> Value {
    let mut obj = Map::new();
    obj.insert("offset".into(), json!(batch.offsets[i]));
    obj.insert("timestamp".into(), json!(batch.timestamps[i]));
    let key = batch.key(i);
    if key.is_empty() {
        obj.insert("key".into(), Value::Null);
    } else {
        let (suffix, v) = show_bytes(key, false);
        obj.insert(format!("key{suffix}"), v);
    }
    let (suffix, v) = show_bytes(batch.value(i), true);
    obj.insert(format!("value{suffix}"), v);
    let headers: Vec<Value> = batch
        .headers(i)
        .map(|(name, value)| {
            let (suffix, v) = show_bytes(value, false);
            let mut h = Map::new();
            h.insert(
                "name".into(),
                Value::String(String::from_utf8_lossy(name).into_owned()),
            );
            h.insert(format!("value{suffix}"), v);
            Value::Object(h)
        })
        .collect();
    obj.insert("headers".into(), Value::Array(headers));
    Value::Object(obj)
}

/// Bytes shown as JSON if they are JSON, else text, else base64 (for pond
/// values and command data): `{"value": ..}` style field pair.
pub fn bytes_field(name: &str, bytes: &[u8]) -> (String, Value) {
    let (suffix, v) = show_bytes(bytes, true);
    (format!("{name}{suffix}"), v)
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn json_text_and_binary_round_trip() {
        let body = br#"{"records": [
            {"key": "a", "value": {"n": 1}, "headers": {"h": "x"}},
            {"value_text": "plain words", "timestamp": 5},
            {"key_base64": "/w==", "value_base64": "AP8=", "headers": [{"name": "b", "value_base64": "/w=="}]}
        ]}"#;
        let (batch, recs) = parse_produce_body(body).unwrap();
        assert!(batch);
        let records: Vec<Record> = recs
            .into_iter()
            .map(|r| r.into_record(9).unwrap().1)
            .collect();
        assert_eq!(records[0].value, br#"{"n":1}"#);
        assert_eq!(records[0].headers, vec![("h".to_string(), b"x".to_vec())]);
        assert_eq!(records[0].timestamp, 9);
        assert_eq!(records[1].timestamp, 5);
        assert_eq!(records[2].key, vec![0xff]);
        let rb = RecordBatch::from_records(10, &records);
        let shown: Vec<Value> = (0..3).map(|i| record_json(&rb, i)).collect();
        assert_eq!(shown[0]["value"], json!({"n": 1}));
        assert_eq!(shown[0]["key"], "a");
        assert_eq!(shown[1]["value_text"], "plain words");
        assert_eq!(shown[1]["key"], Value::Null);
        assert_eq!(shown[2]["key_base64"], "/w==");
        assert_eq!(shown[2]["value_base64"], "AP8=");
        assert_eq!(shown[2]["headers"][0]["value_base64"], "/w==");
        // What a reader sees can be produced again unchanged.
        for (i, mut v) in shown.into_iter().enumerate() {
            let obj = v.as_object_mut().unwrap();
            obj.remove("offset");
            if obj.get("key").is_some_and(Value::is_null) {
                obj.remove("key");
            }
            let r: RecordIn = serde_json::from_value(v).unwrap();
            assert_eq!(r.into_record(0).unwrap().1, records[i]);
        }
    }

    #[test]
    fn bad_records_are_rejected() {
        assert_eq!(
            parse_produce_body(b"{not json").unwrap_err().code,
            "malformed_json"
        );
        assert_eq!(
            parse_produce_body(br#"{"records": []}"#).unwrap_err().code,
            "invalid_record"
        );
        assert_eq!(
            parse_produce_body(br#"{"valeu": 1}"#).unwrap_err().code,
            "malformed_json"
        );
        let (_, recs) = parse_produce_body(br#"{"value": 1, "value_text": "x"}"#).unwrap();
        let err = recs.into_iter().next().unwrap().into_record(0).unwrap_err();
        assert_eq!(err.code, "invalid_record");
        let (_, recs) = parse_produce_body(br#"{"key": "k"}"#).unwrap();
        assert!(recs.into_iter().next().unwrap().into_record(0).is_err());
        let (_, recs) = parse_produce_body(br#"{"value_base64": "!!"}"#).unwrap();
        assert!(recs.into_iter().next().unwrap().into_record(0).is_err());
    }
}
