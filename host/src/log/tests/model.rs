//! Model-based property test: random append / read / reopen / roll /
//! compact / deferred+publish / truncate sequences against an in-memory
//! model (a vector of records per partition).

use std::collections::HashMap;

use proptest::prelude::*;

use super::open;
use crate::batch::Record;
use crate::log::{EventLog, FsyncPolicy, Log, TopicConfig};

#[derive(Debug, Clone)]
enum Op {
    Append {
        part: u32,
        keys: Vec<u8>,
        size: usize,
    },
    Deferred {
        part: u32,
        n: usize,
    },
    Read {
        part: u32,
        from_pct: u8,
        max: usize,
    },
    Reopen,
    Roll {
        part: u32,
    },
    Compact,
    TruncateUnpublished {
        part: u32,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..3u32, prop::collection::vec(0..6u8, 1..6), 1..80usize).prop_map(|(part, keys, size)| Op::Append { part, keys, size }),
        1 => (0..3u32, 1..4usize).prop_map(|(part, n)| Op::Deferred { part, n }),
        4 => (0..3u32, 0..=100u8, 1..50usize).prop_map(|(part, from_pct, max)| Op::Read { part, from_pct, max }),
        1 => Just(Op::Reopen),
        1 => (0..3u32).prop_map(|part| Op::Roll { part }),
        1 => Just(Op::Compact),
        1 => (0..3u32).prop_map(|part| Op::TruncateUnpublished { part }),
    ]
}

/// Partitions 0 and 1 are in the plain topic, partition 2 stands for the compacted topic.
fn target(part: u32) -> (&'static str, u32) {
    if part < 2 {
        ("plain", part)
    } else {
        ("compact", 0)
    }
}

struct Model {
    /// Per model partition: every record ever appended and kept, by offset.
    records: Vec<Vec<Record>>,
    /// Offsets appended deferred and not yet published.
    pending: Vec<Option<usize>>,
}

fn record(seq: usize, key: u8, size: usize) -> Record {
    Record {
        key: if key == 0 { vec![] } else { vec![b'k', key] },
        value: format!("{seq}:{}", "x".repeat(size)).into_bytes(),
        headers: if seq.is_multiple_of(3) {
            vec![("h".into(), seq.to_le_bytes().to_vec())]
        } else {
            vec![]
        },
        timestamp: seq as i64,
    }
}

fn check_plain(log: &Log, m: &Model, part: u32) -> Result<(), TestCaseError> {
    let (t, p) = target(part);
    let visible = m.records[part as usize].len() - m.pending[part as usize].map_or(0, |_| 0);
    let b = log
        .read(t, p, 0, 100_000, usize::MAX)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(b.len(), visible);
    for i in 0..b.len() {
        prop_assert_eq!(b.offsets[i], i as u64);
        prop_assert_eq!(&b.record(i), &m.records[part as usize][i]);
    }
    Ok(())
}

fn check_compacted(log: &Log, m: &Model) -> Result<(), TestCaseError> {
    let all = &m.records[2];
    let b = log
        .read("compact", 0, 0, 100_000, usize::MAX)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut latest: HashMap<&[u8], u64> = HashMap::new();
    for (o, r) in all.iter().enumerate() {
        if !r.key.is_empty() {
            latest.insert(&r.key, o as u64);
        }
    }
    for i in 0..b.len() {
        prop_assert!(i == 0 || b.offsets[i] > b.offsets[i - 1]);
        prop_assert_eq!(&b.record(i), &all[b.offsets[i] as usize]);
    }
    for (_, o) in latest {
        prop_assert!(b.offsets.contains(&o), "latest offset {} lost", o);
    }
    for (o, r) in all.iter().enumerate() {
        if r.key.is_empty() {
            prop_assert!(b.offsets.contains(&(o as u64)), "keyless offset {} lost", o);
        }
    }
    Ok(())
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut log = open(dir.path(), FsyncPolicy::Never);
    let small = TopicConfig {
        segment_bytes: 1024,
        ..TopicConfig::with_partitions(2)
    };
    log.create_topic("plain", small.clone())
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let compacted = TopicConfig {
        partitions: 1,
        compaction: true,
        delete_retention_ms: u64::MAX / 4,
        ..small
    };
    log.create_topic("compact", compacted)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut m = Model {
        records: vec![Vec::new(); 3],
        pending: vec![None; 3],
    };
    let mut seq = 0usize;
    let fail = |e: crate::log::LogError| TestCaseError::fail(e.to_string());
    for op in ops {
        match op {
            Op::Append { part, keys, size } => {
                let (t, p) = target(part);
                let recs: Vec<Record> = keys
                    .iter()
                    .map(|&k| {
                        seq += 1;
                        record(seq, k, size)
                    })
                    .collect();
                let ack = log.append(t, p, &recs).map_err(fail)?;
                let pr = &mut m.records[part as usize];
                prop_assert_eq!(ack.base_offset, pr.len() as u64);
                pr.extend(recs);
                m.pending[part as usize] = None; // a plain append publishes everything before it
            }
            Op::Deferred { part, n } => {
                let (t, p) = target(part);
                let recs: Vec<Record> = (0..n)
                    .map(|_| {
                        seq += 1;
                        record(seq, 1, 10)
                    })
                    .collect();
                let before = m.pending[part as usize].unwrap_or(m.records[part as usize].len());
                let ack = log.append_deferred(t, p, &recs).map_err(fail)?;
                prop_assert_eq!(ack.base_offset, m.records[part as usize].len() as u64);
                prop_assert_eq!(log.end_offset(t, p).map_err(fail)?, before as u64);
                m.records[part as usize].extend(recs);
                // Publish right away (the processor's commit), half of the time in two steps.
                if n > 1 {
                    log.publish(t, p, ack.base_offset + 1).map_err(fail)?;
                }
                log.publish(t, p, ack.end_offset()).map_err(fail)?;
            }
            Op::TruncateUnpublished { part } => {
                let (t, p) = target(part);
                let end = m.records[part as usize].len() as u64;
                log.append_deferred(t, p, &[record(999_999, 2, 5)])
                    .map_err(fail)?;
                log.truncate(t, p, end, false).map_err(fail)?;
                prop_assert_eq!(log.written_end(t, p).map_err(fail)?, end);
            }
            Op::Read {
                part,
                from_pct,
                max,
            } => {
                let (t, p) = target(part);
                let len = m.records[part as usize].len();
                let from = (len * from_pct as usize / 100) as u64;
                let b = log.read(t, p, from, max, usize::MAX).map_err(fail)?;
                prop_assert!(b.len() <= max);
                prop_assert!(b.validate().is_ok());
                if part < 2 {
                    prop_assert_eq!(b.len(), max.min(len - from as usize));
                }
                for i in 0..b.len() {
                    prop_assert!(b.offsets[i] >= from);
                    prop_assert_eq!(
                        &b.record(i),
                        &m.records[part as usize][b.offsets[i] as usize]
                    );
                }
            }
            Op::Reopen => {
                drop(log);
                log = open(dir.path(), FsyncPolicy::Never);
            }
            Op::Roll { part } => {
                let (t, p) = target(part);
                log.roll(t, p).map_err(fail)?;
            }
            Op::Compact => log.run_maintenance().map_err(fail)?,
        }
    }
    check_plain(&log, &m, 0)?;
    check_plain(&log, &m, 1)?;
    check_compacted(&log, &m)?;
    drop(log);
    let log = open(dir.path(), FsyncPolicy::Never);
    check_plain(&log, &m, 0)?;
    check_compacted(&log, &m)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn log_matches_the_model(ops in prop::collection::vec(op(), 1..60)) {
        run(ops)?;
    }
}
