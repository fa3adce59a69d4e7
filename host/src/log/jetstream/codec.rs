//! One weir record as the payload of one JetStream message.
//!
//! NATS headers are text and a weir record's key and header values are
//! bytes, so the whole record travels in the payload, little-endian:
//!
//! ```text
//! u8  version (1)
//! i64 timestamp (ms since the epoch)
//! u32 key length, key
//! u32 header count, then per header: u32 name length, name, u32 value length, value
//! value (the rest of the payload)
//! ```
//!
//! Decoding checks every length against the payload: a message that is not a
//! weir record (published by another client onto a weir subject) is an
//! error, never garbage in a batch.

use bytes::{BufMut, Bytes, BytesMut};

use crate::batch::RecordBatch;

const VERSION: u8 = 1;

/// A payload that is not a weir record.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a weir record: {0}")]
pub struct NotARecord(pub &'static str);

/// Encode record `i` of `batch`.
pub fn encode(batch: &RecordBatch, i: usize) -> Bytes {
    let key = batch.key(i);
    let value = batch.value(i);
    let headers: Vec<(&[u8], &[u8])> = batch.headers(i).collect();
    let header_bytes: usize = headers.iter().map(|(n, v)| 8 + n.len() + v.len()).sum();
    let mut out = BytesMut::with_capacity(1 + 8 + 4 + key.len() + 4 + header_bytes + value.len());
    out.put_u8(VERSION);
    out.put_i64_le(batch.timestamps[i]);
    out.put_u32_le(key.len() as u32);
    out.put_slice(key);
    out.put_u32_le(headers.len() as u32);
    for (name, val) in headers {
        out.put_u32_le(name.len() as u32);
        out.put_slice(name);
        out.put_u32_le(val.len() as u32);
        out.put_slice(val);
    }
    out.put_slice(value);
    out.freeze()
}

/// Reads a payload front to back, refusing any length past its end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], NotARecord> {
        if self.0.len() < n {
            return Err(NotARecord(what));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u32(&mut self, what: &'static str) -> Result<usize, NotARecord> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], NotARecord> {
        let n = self.u32(what)?;
        self.take(n, what)
    }
}

/// Decode `payload` and append it to `batch` at `offset`. On error `batch`
/// is unchanged.
pub fn decode_into(batch: &mut RecordBatch, offset: u64, payload: &[u8]) -> Result<(), NotARecord> {
    let mut r = Reader(payload);
    if r.take(1, "empty payload")?[0] != VERSION {
        return Err(NotARecord("unknown version"));
    }
    let ts = r.take(8, "truncated timestamp")?;
    let timestamp = i64::from_le_bytes([ts[0], ts[1], ts[2], ts[3], ts[4], ts[5], ts[6], ts[7]]);
    let key = r.bytes("truncated key")?;
    let count = r.u32("truncated header count")?;
    // Each header needs at least 8 bytes: a count beyond that is a lie.
    if count > r.0.len() / 8 {
        return Err(NotARecord("header count exceeds the payload"));
    }
    let mut headers = Vec::with_capacity(count);
    for _ in 0..count {
        let name = r.bytes("truncated header name")?;
        let value = r.bytes("truncated header value")?;
        headers.push((name, value));
    }
    batch.push_parts(offset, timestamp, key, r.0, headers);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Record;

    fn sample() -> Vec<Record> {
        vec![
            Record {
                key: b"k\0\xff".to_vec(),
                value: b"{\"a\":1}".to_vec(),
                headers: vec![("trace".into(), b"\x01\x02".to_vec()), ("e".into(), vec![])],
                timestamp: -5,
            },
            Record::default(),
            Record {
                key: vec![],
                value: vec![7; 3000],
                headers: vec![],
                timestamp: i64::MAX,
            },
        ]
    }

    #[test]
    fn records_round_trip_through_payloads() {
        let batch = RecordBatch::from_records(0, &sample());
        let mut back = RecordBatch::default();
        for i in 0..batch.len() {
            let payload = encode(&batch, i);
            assert_eq!(decode_into(&mut back, 40 + i as u64, &payload), Ok(()));
        }
        assert_eq!(back.offsets, vec![40, 41, 42]);
        for (i, want) in sample().iter().enumerate() {
            assert_eq!(&back.record(i), want);
        }
        assert!(back.validate().is_ok());
    }

    #[test]
    fn foreign_and_torn_payloads_are_refused_without_touching_the_batch() {
        let batch = RecordBatch::from_records(0, &sample());
        let good = encode(&batch, 0);
        let mut out = RecordBatch::default();
        // Cutting inside the value still decodes (the value is the rest of
        // the payload); cutting anywhere before it must not.
        for cut in 0..good.len() - 7 {
            assert!(decode_into(&mut out, 0, &good[..cut]).is_err(), "cut {cut}");
        }
        assert!(decode_into(&mut out, 0, b"hello world").is_err());
        let mut lying = good.to_vec();
        let at = 1 + 8 + 4 + 3; // the header count
        lying[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            decode_into(&mut out, 0, &lying),
            Err(NotARecord("header count exceeds the payload"))
        );
        assert!(out.is_empty());
    }
}
