//! Forwarding on a real three-node cluster, two hosts: every committed
//! output lands once, across a host dying between publishing and trimming.

use std::sync::Arc;

use weir_testkit::nats::NatsCluster;

use super::*;
use crate::batch::Record;
use crate::cluster::commits::{Output, Step};
use crate::log::{EventLog, TopicConfig};
use crate::nats::{Nats, NatsConfig};

struct Host {
    log: JetStreamLog,
    commits: CommitStream,
}

fn host(cluster: &NatsCluster) -> Host {
    let config = NatsConfig {
        namespace: "fwd".into(),
        ..NatsConfig::new(cluster.urls().split(',').map(String::from).collect())
    };
    let nats = Arc::new(Nats::connect(&config).expect("connect"));
    Host {
        log: JetStreamLog::on(nats.clone()).expect("log"),
        commits: CommitStream::open(nats, "enrich").expect("commit stream"),
    }
}

fn out(partition: u32, value: &str) -> Output {
    Output {
        topic: "enriched".into(),
        partition,
        record: Record {
            key: b"k".to_vec(),
            value: value.as_bytes().to_vec(),
            headers: vec![],
            timestamp: 1,
        },
    }
}

fn step(outputs: Vec<Output>, checkpoint: &str) -> Step {
    Step {
        outputs,
        state: vec![],
        checkpoint: checkpoint.as_bytes().to_vec(),
    }
}

/// Every value in the topic, partition by partition.
fn contents(log: &JetStreamLog) -> Vec<Vec<String>> {
    (0..2)
        .map(|p| {
            let batch = log.read("enriched", p, 0, 1000, 1 << 20).expect("read");
            (0..batch.len())
                .map(|i| String::from_utf8_lossy(batch.value(i)).into_owned())
                .collect()
        })
        .collect()
}

#[test]
fn committed_outputs_land_once_across_a_host_dying_mid_forward() {
    let cluster = NatsCluster::shared();
    let (a, b) = (host(cluster), host(cluster));
    a.log
        .create_topic("enriched", TopicConfig::with_partitions(2))
        .expect("create");

    let mut owner = a.commits.start(0).expect("claim");
    a.commits
        .commit(
            &mut owner,
            step(vec![out(0, "o0"), out(1, "o1"), out(0, "o2")], "3"),
        )
        .expect("commit");
    let sent = forward(&a.log, &a.commits, &mut owner).expect("forward");
    assert_eq!(
        sent,
        Forwarded {
            published: 3,
            already_there: 0
        }
    );
    assert!(owner.outbox.is_empty());
    assert_eq!(contents(&b.log), [vec!["o0", "o2"], vec!["o1"]]);

    // a commits two more and dies after publishing only the first of them.
    a.commits
        .commit(&mut owner, step(vec![out(1, "o3"), out(0, "o4")], "5"))
        .expect("commit");
    let first = &owner.outbox[0];
    let id = format!("{}{}", a.commits.output_id_prefix(0), first.n);
    a.log
        .append_once("enriched", 1, &id, &first.output.record)
        .expect("the dying host's publish");

    // b takes over: it finds o3 in its topic and forwards only o4.
    let mut taken = b.commits.claim(0).expect("takeover");
    assert_eq!(taken.outbox.len(), 2);
    let sent = forward(&b.log, &b.commits, &mut taken).expect("forward");
    assert_eq!(
        sent,
        Forwarded {
            published: 1,
            already_there: 1
        }
    );
    assert_eq!(contents(&a.log), [vec!["o0", "o2", "o4"], vec!["o1", "o3"]]);

    // a, back from its pause, may neither forward its stale outbox nor commit.
    let stale = forward(&a.log, &a.commits, &mut owner);
    assert!(
        matches!(stale, Err(ForwardError::Commit(CommitError::Fenced { .. }))),
        "{stale:?}"
    );
    // Even past that check (a pause between it and the publishes), the ids
    // keep what it sends from landing twice within JetStream's window.
    for p in &owner.outbox {
        let id = format!("{}{}", a.commits.output_id_prefix(0), p.n);
        let (_, duplicate) = a
            .log
            .append_once(&p.output.topic, p.output.partition, &id, &p.output.record)
            .expect("append");
        assert!(duplicate, "{id}");
    }
    assert!(
        a.commits
            .commit(&mut owner, step(vec![out(0, "x")], "6"))
            .is_err()
    );
    assert_eq!(contents(&b.log), [vec!["o0", "o2", "o4"], vec!["o1", "o3"]]);

    // The new owner goes on numbering after what was forwarded.
    b.commits
        .commit(&mut taken, step(vec![out(1, "o5")], "6"))
        .expect("commit");
    let sent = forward(&b.log, &b.commits, &mut taken).expect("forward");
    assert_eq!(
        sent,
        Forwarded {
            published: 1,
            already_there: 0
        }
    );
    assert_eq!(
        contents(&a.log),
        [vec!["o0", "o2", "o4"], vec!["o1", "o3", "o5"]]
    );
}
