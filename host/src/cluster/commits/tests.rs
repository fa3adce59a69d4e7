//! The commit stream on a real three-node cluster: atomic steps, state and
//! outbox recovered by a claim, and fencing of a previous owner.

use weir_testkit::nats::NatsCluster;

use super::*;
use crate::nats::NatsConfig;

fn connect(cluster: &NatsCluster) -> Arc<Nats> {
    let config = NatsConfig {
        namespace: "commits".into(),
        ..NatsConfig::new(cluster.urls().split(',').map(String::from).collect())
    };
    Arc::new(Nats::connect(&config).expect("connect"))
}

fn out(topic: &str, partition: u32, value: &str) -> Output {
    Output {
        topic: topic.into(),
        partition,
        record: Record {
            key: b"k".to_vec(),
            value: value.as_bytes().to_vec(),
            headers: vec![("h".into(), vec![1, 2])],
            timestamp: 7,
        },
    }
}

fn step(outputs: Vec<Output>, state: &[(&str, Option<&str>)], checkpoint: &str) -> Step {
    Step {
        outputs,
        state: state
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.map(|v| v.as_bytes().to_vec())))
            .collect(),
        checkpoint: checkpoint.as_bytes().to_vec(),
    }
}

fn values(outbox: &[Pending]) -> Vec<String> {
    outbox
        .iter()
        .map(|p| String::from_utf8_lossy(&p.output.record.value).into_owned())
        .collect()
}

#[test]
fn steps_commit_whole_survive_a_takeover_and_fence_the_old_owner() {
    let cluster = NatsCluster::shared();
    // Two hosts with their own connections to the same processor's stream.
    let host_a = CommitStream::open(connect(cluster), "orders.enrich").expect("open");
    let host_b = CommitStream::open(connect(cluster), "orders.enrich").expect("open");

    // A takeover never reads "no checkpoint" as "start afresh": it writes
    // nothing and asks to retry. A new processor's first claim may.
    assert!(matches!(
        host_a.claim(0),
        Err(CommitError::NoCheckpoint { partition: 0, .. })
    ));
    let mut a = host_a.start(0).expect("claim a fresh partition");
    assert_eq!(
        (a.checkpoint.clone(), a.state.len(), a.outbox.len()),
        (None, 0, 0)
    );
    host_a
        .commit(
            &mut a,
            step(
                vec![out("enriched", 1, "o1"), out("enriched", 0, "o2")],
                &[("x", Some("1")), ("y", Some("2"))],
                "10",
            ),
        )
        .expect("commit 1");
    host_a
        .commit(
            &mut a,
            step(
                vec![out("enriched", 1, "o3")],
                &[("x", None), ("z", Some("3"))],
                "12",
            ),
        )
        .expect("commit 2");
    host_a
        .commit(&mut a, step(vec![], &[], "13"))
        .expect("a checkpoint alone");
    assert_eq!(values(&a.outbox), ["o1", "o2", "o3"]);
    host_a.forwarded(&mut a, 0).expect("forwarded o1");
    assert_eq!(values(&a.outbox), ["o2", "o3"]);

    // Another partition is independent.
    let mut other = host_b.start(1).expect("claim partition 1");
    host_b
        .commit(&mut other, step(vec![], &[("x", Some("p1"))], "5"))
        .expect("commit");

    // b takes partition 0 over: it sees exactly what a committed.
    let mut b = host_b.claim(0).expect("takeover");
    assert_eq!(b.checkpoint.as_deref(), Some(&b"13"[..]));
    let state: Vec<(String, String)> = b
        .state
        .iter()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(k).into(),
                String::from_utf8_lossy(v).into(),
            )
        })
        .collect();
    assert_eq!(state, [("y".into(), "2".into()), ("z".into(), "3".into())]);
    assert_eq!(
        values(&b.outbox),
        ["o2", "o3"],
        "forwarded outputs are gone"
    );
    assert_eq!(b.outbox[0].output, out("enriched", 0, "o2"));
    assert_eq!(b.outbox.iter().map(|p| p.n).collect::<Vec<_>>(), [1, 2]);

    // a, paused through the takeover, cannot commit anything any more.
    let zombie = host_a.commit(
        &mut a,
        step(
            vec![out("enriched", 1, "dup")],
            &[("y", Some("zombie"))],
            "99",
        ),
    );
    assert!(
        matches!(zombie, Err(CommitError::Fenced { partition: 0, .. })),
        "{zombie:?}"
    );
    let again = host_a.start(0).expect("a claims back");
    assert_eq!(
        again.checkpoint.as_deref(),
        Some(&b"13"[..]),
        "the fenced commit left nothing"
    );
    assert_eq!(
        again.state.get(&b"y"[..]).map(Vec::as_slice),
        Some(&b"2"[..])
    );
    assert_eq!(values(&again.outbox), ["o2", "o3"]);
    // ...and now b is the one fenced out.
    assert!(matches!(
        host_b.commit(&mut b, step(vec![], &[], "14")),
        Err(CommitError::Fenced { .. })
    ));
    let mut a = again;
    host_a
        .commit(&mut a, step(vec![out("enriched", 0, "o4")], &[], "14"))
        .expect("the new owner commits");
    assert_eq!(
        a.outbox.last().map(|p| p.n),
        Some(3),
        "output numbers keep growing"
    );

    let too_big = Step {
        outputs: (0..MAX_COMMIT_MESSAGES)
            .map(|i| out("t", 0, &i.to_string()))
            .collect(),
        ..Step::default()
    };
    assert!(matches!(
        host_a.commit(&mut a, too_big),
        Err(CommitError::TooLarge(_))
    ));
    let p1 = host_a.claim(1).expect("claim");
    assert_eq!(p1.state.get(&b"x"[..]).map(Vec::as_slice), Some(&b"p1"[..]));

    // Numbers are never reused, even after the outbox emptied.
    host_a.forwarded(&mut a, 3).expect("all forwarded");
    assert!(a.outbox.is_empty());
    let mut b = host_b.claim(0).expect("claim an empty outbox");
    assert!(b.outbox.is_empty());
    host_b
        .commit(&mut b, step(vec![out("enriched", 0, "o5")], &[], "15"))
        .expect("commit");
    assert_eq!(b.outbox[0].n, 4);
}

#[test]
fn state_entries_round_trip_and_foreign_payloads_are_refused() {
    for (k, v) in [
        (&b""[..], Some(&b""[..])),
        (b"k\0", Some(b"v")),
        (b"gone", None),
    ] {
        let e = encode_state(k, v);
        assert_eq!(decode_state(&e), Some((k.to_vec(), v.map(<[u8]>::to_vec))));
    }
    for bad in [
        &b""[..],
        b"\x00\x05\x00\x00\x00ab",
        b"\x02\x00\x00\x00\x00",
        b"\x01\x01\x00\x00\x00kv",
    ] {
        assert_eq!(decode_state(bad), None, "{bad:?}");
    }
}

/// Poll `f` until it hands over an update (or fail after a few seconds).
fn next_update(f: &mut StateFollower) -> StateUpdate {
    for _ in 0..100 {
        if let Some(u) = f.poll(Duration::from_millis(50), 100).expect("poll") {
            return u;
        }
    }
    panic!("no update");
}

fn owned(pairs: &[(&str, &str)]) -> BTreeMap<Vec<u8>, Vec<u8>> {
    pairs
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

#[test]
fn a_follower_gets_the_whole_state_then_every_change_in_order() {
    let cluster = NatsCluster::shared();
    let stream = CommitStream::open(connect(cluster), "totals.follow").expect("open");
    let mut owner = stream.start(0).expect("claim");
    // More entries than one consumer batch, overwritten and deleted.
    let keys: Vec<String> = (0..1500).map(|i| format!("k{i:04}")).collect();
    for chunk in keys.chunks(500) {
        let state: Vec<(&str, Option<&str>)> =
            chunk.iter().map(|k| (k.as_str(), Some("1"))).collect();
        stream
            .commit(&mut owner, step(vec![], &state, "c"))
            .expect("commit");
    }
    stream
        .commit(
            &mut owner,
            step(vec![], &[("k0000", Some("2")), ("k0001", None)], "c"),
        )
        .expect("commit");

    let mut f = stream.follow_state(0).expect("follow");
    let StateUpdate::Replace(whole) = next_update(&mut f) else {
        panic!("the whole state comes first");
    };
    assert_eq!(whole.len(), 1499, "k0001 was deleted");
    assert_eq!(whole.get(b"k0000".as_slice()), Some(&b"2".to_vec()));
    let mut committed: BTreeMap<Vec<u8>, Vec<u8>> = keys
        .iter()
        .map(|k| (k.as_bytes().to_vec(), b"1".to_vec()))
        .collect();
    committed.insert(b"k0000".to_vec(), b"2".to_vec());
    committed.remove(b"k0001".as_slice());
    assert_eq!(
        whole, committed,
        "the follower sees what the owner committed"
    );
    assert_eq!(stream.claim(0).expect("claim").state, committed);
    owner = stream.claim(0).expect("claim back");
    assert_eq!(f.poll(Duration::from_millis(100), 100).expect("poll"), None);

    // Later commits arrive as changes, in commit order.
    stream
        .commit(
            &mut owner,
            step(vec![], &[("k0000", Some("3")), ("new", Some("x"))], "c"),
        )
        .expect("commit");
    stream
        .commit(&mut owner, step(vec![], &[("new", None)], "c"))
        .expect("commit");
    let mut changes = Vec::new();
    while changes.len() < 3 {
        match next_update(&mut f) {
            StateUpdate::Changes(c) => changes.extend(c),
            StateUpdate::Replace(_) => panic!("only one whole state"),
        }
    }
    let k = |s: &str| s.as_bytes().to_vec();
    assert_eq!(
        changes,
        vec![
            (k("k0000"), Some(k("3"))),
            (k("new"), Some(k("x"))),
            (k("new"), None)
        ]
    );

    // An empty state is handed over at once.
    let empty = CommitStream::open(connect(cluster), "totals.empty").expect("open");
    let mut f = empty.follow_state(0).expect("follow");
    assert_eq!(next_update(&mut f), StateUpdate::Replace(owned(&[])));
}

#[test]
fn partitions_lists_the_checkpointed_ones_and_delete_removes_everything() {
    let cluster = NatsCluster::shared();
    let stream = CommitStream::open(connect(cluster), "gone.soon").expect("open");
    for p in [11, 0, 2] {
        let mut owner = stream.start(p).expect("claim");
        stream
            .commit(&mut owner, step(vec![], &[("k", Some("v"))], "c"))
            .expect("commit");
    }
    assert_eq!(stream.partitions().expect("partitions"), vec![0, 2, 11]);
    stream.delete().expect("delete");
    stream.delete().expect("deleting what is gone is no error");
    let again = CommitStream::open(connect(cluster), "gone.soon").expect("open again");
    assert_eq!(again.partitions().expect("partitions"), Vec::<u32>::new());
    assert!(matches!(
        again.claim(0),
        Err(CommitError::NoCheckpoint { partition: 0, .. })
    ));
}

/// A claim and a follower read the whole state and outbox committed just
/// before, every time: a consumer's `num_pending` came short now and then
/// (claims read 1,000 or 1,296 of 1,500 entries here), so reads end at the
/// last message on their subjects instead.
#[test]
fn claims_and_followers_read_everything_committed_just_before() {
    let cluster = NatsCluster::shared();
    let mut short = Vec::new();
    for round in 0..20 {
        let stream = CommitStream::open(connect(cluster), &format!("whole{round}")).expect("open");
        let mut owner = stream.start(0).expect("claim");
        for chunk in 0..3 {
            let keys: Vec<String> = (0..500).map(|i| format!("k{chunk}-{i:04}")).collect();
            let state: Vec<(&str, Option<&str>)> =
                keys.iter().map(|k| (k.as_str(), Some("1"))).collect();
            let outputs = (0..400)
                .map(|i| out("t", 0, &format!("{chunk}-{i}")))
                .collect();
            stream
                .commit(&mut owner, step(outputs, &state, "c"))
                .expect("commit");
        }
        let claimed = stream.claim(0).expect("claim");
        let mut follower = stream.follow_state(0).expect("follow");
        let followed = match next_update(&mut follower) {
            StateUpdate::Replace(whole) => whole.len(),
            StateUpdate::Changes(_) => 0,
        };
        if (claimed.state.len(), claimed.outbox.len(), followed) != (1500, 1200, 1500) {
            short.push((round, claimed.state.len(), claimed.outbox.len(), followed));
        }
    }
    assert!(
        short.is_empty(),
        "(round, state, outbox, followed): {short:?}"
    );
}
