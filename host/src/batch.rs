//! Columnar record batches: the one in-memory shape of events shared by the
//! log's read path, the plugin runtime and the processors.
//!
//! A batch is a handful of primitive vectors (offsets, timestamps, cumulative
//! key / value / header ends and one blob per column), exactly the shape of
//! the WIT `batch` record, so a batch read from the log crosses into a plugin
//! as a few memory copies and never per-record re-encoding.
//!
//! Promises: every `*_ends` vector is non-decreasing and its last entry equals
//! the length of its blob; accessors never panic on a batch built through
//! [`RecordBatch::push`] or validated by [`RecordBatch::validate`].

use std::ops::Range;

/// One record as a producer sees it. An empty key means "no key".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
}

/// Headers of a sequence of events, columnar (see the WIT `header-columns`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderColumns {
    /// One per event: end of its headers in the per-header lists.
    pub ends: Vec<u32>,
    /// One per header: end of its name in `names`.
    pub name_ends: Vec<u32>,
    pub names: Vec<u8>,
    /// One per header: end of its value in `values`.
    pub value_ends: Vec<u32>,
    pub values: Vec<u8>,
}

/// A batch of records of one partition, columnar.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecordBatch {
    /// One per record. For a batch not yet appended these are placeholders.
    pub offsets: Vec<u64>,
    pub timestamps: Vec<i64>,
    pub key_ends: Vec<u32>,
    pub keys: Vec<u8>,
    pub value_ends: Vec<u32>,
    pub values: Vec<u8>,
    pub headers: HeaderColumns,
}

/// A batch whose columns do not describe a consistent set of records.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed batch: {0}")]
pub struct MalformedBatch(pub &'static str);

/// Range of item `i` in a blob described by cumulative `ends`.
pub(crate) fn span(ends: &[u32], i: usize) -> Range<usize> {
    let start = if i == 0 { 0 } else { ends[i - 1] as usize };
    start..ends[i] as usize
}

/// Whether `ends` is non-decreasing and ends at `blob_len`.
pub(crate) fn ends_ok(ends: &[u32], blob_len: usize) -> bool {
    ends.windows(2).all(|w| w[0] <= w[1]) && ends.last().map_or(0, |&e| e as usize) == blob_len
}

impl HeaderColumns {
    /// Headers of event `i` as (name, value) pairs. Names that are not UTF-8
    /// are rendered lossily.
    pub fn of(&self, i: usize) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        span(&self.ends, i).map(move |j| {
            (
                &self.names[span(&self.name_ends, j)],
                &self.values[span(&self.value_ends, j)],
            )
        })
    }

    /// Append the headers of one more event.
    pub fn push_event<'a>(&mut self, headers: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) {
        for (name, value) in headers {
            self.names.extend_from_slice(name);
            self.name_ends.push(len_u32(self.names.len()));
            self.values.extend_from_slice(value);
            self.value_ends.push(len_u32(self.values.len()));
        }
        self.ends.push(len_u32(self.name_ends.len()));
    }

    /// Check the invariants for `events` events.
    pub fn validate(&self, events: usize) -> Result<(), MalformedBatch> {
        if self.ends.len() != events {
            return Err(MalformedBatch("header ends count differs from event count"));
        }
        if !ends_ok(&self.ends, self.name_ends.len()) {
            return Err(MalformedBatch("header ends are not cumulative"));
        }
        if self.name_ends.len() != self.value_ends.len() {
            return Err(MalformedBatch("header name and value counts differ"));
        }
        if !ends_ok(&self.name_ends, self.names.len()) {
            return Err(MalformedBatch("header name ends are not cumulative"));
        }
        if !ends_ok(&self.value_ends, self.values.len()) {
            return Err(MalformedBatch("header value ends are not cumulative"));
        }
        Ok(())
    }
}

/// Blob sizes are bounded far below 4 GiB by the log's batch limits; a
/// larger one is a bug in the caller, not an input error.
fn len_u32(n: usize) -> u32 {
    u32::try_from(n).expect("batch column larger than 4 GiB")
}

impl RecordBatch {
    pub fn len(&self) -> usize {
        self.value_ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.value_ends.is_empty()
    }

    /// The batch's event time: its newest record timestamp (0 when empty).
    pub fn event_time(&self) -> i64 {
        self.timestamps.iter().copied().max().unwrap_or(0)
    }

    /// Key of record `i`; empty when the record has no key.
    pub fn key(&self, i: usize) -> &[u8] {
        &self.keys[span(&self.key_ends, i)]
    }

    pub fn value(&self, i: usize) -> &[u8] {
        &self.values[span(&self.value_ends, i)]
    }

    pub fn headers(&self, i: usize) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.headers.of(i)
    }

    /// Append one record with the given offset.
    pub fn push(&mut self, offset: u64, record: &Record) {
        self.push_parts(
            offset,
            record.timestamp,
            &record.key,
            &record.value,
            record
                .headers
                .iter()
                .map(|(n, v)| (n.as_bytes(), v.as_slice())),
        );
    }

    /// Append one record from its parts.
    pub fn push_parts<'a>(
        &mut self,
        offset: u64,
        timestamp: i64,
        key: &[u8],
        value: &[u8],
        headers: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    ) {
        self.offsets.push(offset);
        self.timestamps.push(timestamp);
        self.keys.extend_from_slice(key);
        self.key_ends.push(len_u32(self.keys.len()));
        self.values.extend_from_slice(value);
        self.value_ends.push(len_u32(self.values.len()));
        self.headers.push_event(headers);
    }

    /// Build a batch from records, numbering them from `first_offset`.
    pub fn from_records<'a>(
        first_offset: u64,
        records: impl IntoIterator<Item = &'a Record>,
    ) -> Self {
        let mut batch = RecordBatch::default();
        for (i, r) in records.into_iter().enumerate() {
            batch.push(first_offset + i as u64, r);
        }
        batch
    }

    /// Record `i` as an owned [`Record`].
    pub fn record(&self, i: usize) -> Record {
        Record {
            key: self.key(i).to_vec(),
            value: self.value(i).to_vec(),
            headers: self
                .headers(i)
                .map(|(n, v)| (String::from_utf8_lossy(n).into_owned(), v.to_vec()))
                .collect(),
            timestamp: self.timestamps[i],
        }
    }

    /// Total payload bytes (keys, values, headers).
    pub fn payload_bytes(&self) -> usize {
        self.keys.len() + self.values.len() + self.headers.names.len() + self.headers.values.len()
    }

    /// Check that the columns describe a consistent set of records.
    pub fn validate(&self) -> Result<(), MalformedBatch> {
        let n = self.value_ends.len();
        if self.offsets.len() != n || self.timestamps.len() != n || self.key_ends.len() != n {
            return Err(MalformedBatch("column lengths differ"));
        }
        if !ends_ok(&self.key_ends, self.keys.len()) {
            return Err(MalformedBatch("key ends are not cumulative"));
        }
        if !ends_ok(&self.value_ends, self.values.len()) {
            return Err(MalformedBatch("value ends are not cumulative"));
        }
        self.headers.validate(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: &str, value: &str, headers: &[(&str, &str)]) -> Record {
        Record {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect(),
            timestamp: 42,
        }
    }

    #[test]
    fn round_trips_records() {
        let records = vec![
            rec("a", "one", &[("h1", "x"), ("h2", "")]),
            rec("", "two", &[]),
            rec("ccc", "", &[("h3", "zz")]),
        ];
        let batch = RecordBatch::from_records(7, &records);
        assert_eq!(batch.len(), 3);
        assert_eq!(batch.offsets, vec![7, 8, 9]);
        assert!(batch.validate().is_ok());
        for (i, r) in records.iter().enumerate() {
            assert_eq!(&batch.record(i), r);
        }
        assert_eq!(batch.key(1), b"");
        assert_eq!(batch.headers(2).count(), 1);
    }

    #[test]
    fn validate_rejects_inconsistent_columns() {
        let mut batch = RecordBatch::from_records(0, &[rec("k", "v", &[])]);
        batch.value_ends[0] = 5;
        assert_eq!(
            batch.validate(),
            Err(MalformedBatch("value ends are not cumulative"))
        );
        let mut batch = RecordBatch::from_records(0, &[rec("k", "v", &[])]);
        batch.offsets.push(1);
        assert_eq!(
            batch.validate(),
            Err(MalformedBatch("column lengths differ"))
        );
        let mut batch = RecordBatch::from_records(0, &[rec("k", "v", &[("a", "b")])]);
        batch.headers.ends[0] = 0;
        assert!(batch.validate().is_err());
    }
}
