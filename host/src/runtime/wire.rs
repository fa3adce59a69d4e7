//! The hot path's wire types: a [`RecordBatch`] lowered into a plugin
//! straight from borrowed slices ([`BatchRef`], the WIT `batch` record,
//! nothing cloned on the host side), and [`Emitted`], the host's checked
//! copy of what an enricher returns.

use super::bindings::types;
use crate::batch::{HeaderColumns, RecordBatch, ends_ok as cumulative, span};
use wasmtime::component::{ComponentType, Lower};

/// The WIT `batch` record, borrowing its columns.
#[derive(ComponentType, Lower, Clone, Copy)]
#[component(record)]
pub(crate) struct BatchRef<'a> {
    #[component(name = "topic")]
    pub topic: &'a str,
    #[component(name = "partition")]
    pub partition: u32,
    #[component(name = "offsets")]
    pub offsets: &'a [u64],
    #[component(name = "timestamps")]
    pub timestamps: &'a [i64],
    #[component(name = "key-ends")]
    pub key_ends: &'a [u32],
    #[component(name = "keys")]
    pub keys: &'a [u8],
    #[component(name = "value-ends")]
    pub value_ends: &'a [u32],
    #[component(name = "values")]
    pub values: &'a [u8],
    #[component(name = "headers")]
    pub headers: HeaderColumnsRef<'a>,
}

/// The WIT `header-columns` record, borrowing its columns.
#[derive(ComponentType, Lower, Clone, Copy)]
#[component(record)]
pub(crate) struct HeaderColumnsRef<'a> {
    #[component(name = "ends")]
    pub ends: &'a [u32],
    #[component(name = "name-ends")]
    pub name_ends: &'a [u32],
    #[component(name = "names")]
    pub names: &'a [u8],
    #[component(name = "value-ends")]
    pub value_ends: &'a [u32],
    #[component(name = "values")]
    pub values: &'a [u8],
}

impl<'a> BatchRef<'a> {
    pub(crate) fn new(topic: &'a str, partition: u32, batch: &'a RecordBatch) -> Self {
        let h = &batch.headers;
        BatchRef {
            topic,
            partition,
            offsets: &batch.offsets,
            timestamps: &batch.timestamps,
            key_ends: &batch.key_ends,
            keys: &batch.keys,
            value_ends: &batch.value_ends,
            values: &batch.values,
            headers: HeaderColumnsRef {
                ends: &h.ends,
                name_ends: &h.name_ends,
                names: &h.names,
                value_ends: &h.value_ends,
                values: &h.values,
            },
        }
    }
}

/// What an enricher emitted for a batch, columnar (the WIT `emitted`),
/// validated: every accessor is in bounds for `0..len()`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Emitted {
    /// One per record: index into the processor's outputs.
    pub outputs: Vec<u32>,
    /// One per record: index in the input batch of the event it came from.
    pub sources: Vec<u32>,
    pub key_ends: Vec<u32>,
    pub keys: Vec<u8>,
    pub value_ends: Vec<u32>,
    pub values: Vec<u8>,
    pub headers: HeaderColumns,
}

impl Emitted {
    pub fn len(&self) -> usize {
        self.outputs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.outputs.is_empty()
    }

    /// Key of record `i`; empty = no key.
    pub fn key(&self, i: usize) -> &[u8] {
        &self.keys[span(&self.key_ends, i)]
    }

    pub fn value(&self, i: usize) -> &[u8] {
        &self.values[span(&self.value_ends, i)]
    }

    pub fn headers(&self, i: usize) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.headers.of(i)
    }

    /// Check that the columns are consistent and every source index points
    /// into a batch of `batch_len` events and every output index is below
    /// `output_count`.
    pub fn validate(&self, batch_len: usize, output_count: u32) -> Result<(), String> {
        let n = self.outputs.len();
        if self.sources.len() != n || self.key_ends.len() != n || self.value_ends.len() != n {
            return Err(format!(
                "column lengths differ (outputs {n}, sources {}, key ends {}, value ends {})",
                self.sources.len(),
                self.key_ends.len(),
                self.value_ends.len()
            ));
        }
        if !cumulative(&self.key_ends, self.keys.len()) {
            return Err("key ends are not cumulative ending at the key blob's length".into());
        }
        if !cumulative(&self.value_ends, self.values.len()) {
            return Err("value ends are not cumulative ending at the value blob's length".into());
        }
        self.headers.validate(n).map_err(|e| e.to_string())?;
        if let Some((i, s)) = self
            .sources
            .iter()
            .enumerate()
            .find(|(_, s)| **s as usize >= batch_len)
        {
            return Err(format!(
                "record {i} names source event {s}, but the batch has {batch_len} events"
            ));
        }
        if let Some((i, o)) = self
            .outputs
            .iter()
            .enumerate()
            .find(|(_, o)| **o >= output_count)
        {
            return Err(format!(
                "record {i} goes to output {o}, but the processor has {output_count} outputs"
            ));
        }
        Ok(())
    }

    pub(crate) fn from_wit(e: types::Emitted) -> Self {
        Emitted {
            outputs: e.outputs,
            sources: e.sources,
            key_ends: e.key_ends,
            keys: e.keys,
            value_ends: e.value_ends,
            values: e.values,
            headers: HeaderColumns {
                ends: e.headers.ends,
                name_ends: e.headers.name_ends,
                names: e.headers.names,
                value_ends: e.headers.value_ends,
                values: e.headers.values,
            },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn good() -> Emitted {
        Emitted {
            outputs: vec![0, 1],
            sources: vec![0, 2],
            key_ends: vec![1, 1],
            keys: b"k".to_vec(),
            value_ends: vec![2, 5],
            values: b"v1v22".to_vec(),
            headers: HeaderColumns {
                ends: vec![0, 1],
                name_ends: vec![1],
                names: b"h".to_vec(),
                value_ends: vec![0],
                values: vec![],
            },
        }
    }

    #[test]
    fn accepts_consistent_output() {
        let e = good();
        assert_eq!(e.validate(3, 2), Ok(()));
        assert_eq!((e.key(0), e.value(1)), (&b"k"[..], &b"v22"[..]));
        assert_eq!(e.headers(1).count(), 1);
    }

    #[test]
    fn rejects_inconsistent_output() {
        assert!(
            good()
                .validate(2, 2)
                .unwrap_err()
                .contains("source event 2")
        );
        assert!(good().validate(3, 1).unwrap_err().contains("output 1"));
        let mut e = good();
        e.value_ends[1] = 9;
        assert!(e.validate(3, 2).is_err());
        let mut e = good();
        e.sources.pop();
        assert!(e.validate(3, 2).unwrap_err().contains("column lengths"));
        let mut e = good();
        e.headers.ends = vec![1];
        assert!(e.validate(3, 2).is_err());
        let mut e = good();
        e.key_ends = vec![2, 1];
        assert!(e.validate(3, 2).is_err());
    }
}
