//! Leases against a real three-node cluster, with several `Leases` standing
//! for several hosts. One cluster serves every check; each uses its own
//! namespace, so the checks do not see each other's hosts.

use std::time::Instant;

use weir_testkit::nats::NatsCluster;

use super::*;
use crate::nats::NatsConfig;

const TTL: Duration = Duration::from_secs(3);

fn host(cluster: &NatsCluster, ns: &str, id: &str) -> Leases {
    let config = NatsConfig {
        namespace: ns.into(),
        ..NatsConfig::new(cluster.urls().split(',').map(String::from).collect())
    };
    let nats = Arc::new(Nats::connect(&config).expect("connect"));
    Leases::join(nats, id, TTL).expect("join")
}

fn units(n: u32) -> Vec<Unit> {
    (0..n).map(|p| Unit::new("orders.enrich", p)).collect()
}

fn owned(hosts: &[&Leases]) -> Vec<BTreeSet<Unit>> {
    hosts
        .iter()
        .map(|h| h.held().into_iter().map(|(u, _)| u).collect())
        .collect()
}

/// Tick every host until `done` holds or `within` passes.
fn settle(
    hosts: &[&Leases],
    all: &[Unit],
    within: Duration,
    done: impl Fn(&[BTreeSet<Unit>]) -> bool,
) {
    let deadline = Instant::now() + within;
    loop {
        for h in hosts {
            let changes = h.tick(all).expect("tick");
            for u in &changes.to_release {
                h.release(u).expect("release");
            }
        }
        if done(&owned(hosts)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "did not settle: {:?}",
            owned(hosts)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn disjoint_and_complete(sets: &[BTreeSet<Unit>], all: &[Unit]) -> bool {
    let total: usize = sets.iter().map(BTreeSet::len).sum();
    let union: BTreeSet<&Unit> = sets.iter().flatten().collect();
    total == all.len() && union.len() == all.len()
}

#[test]
fn rendezvous_assignment_is_balanced_and_moves_little() {
    let hosts: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
    let all: Vec<Unit> = (0..300).map(|p| Unit::new("p", p)).collect();
    let mut counts = BTreeMap::new();
    for u in &all {
        *counts.entry(desired_owner(u, &hosts)).or_insert(0) += 1;
    }
    assert!(
        counts.values().all(|&c| (70..=130).contains(&c)),
        "{counts:?}"
    );
    let two = &hosts[..2];
    for u in &all {
        let before = desired_owner(u, &hosts);
        let after = desired_owner(u, two);
        if before != Some("c") {
            assert_eq!(before, after, "a unit of a surviving host never moves");
        }
    }
    assert_eq!(desired_owner(&all[0], &[]), None);
    assert_ne!(Unit::new("a.b", 1).key(), Unit::new("a_b", 1).key());
}

#[test]
fn hosts_share_units_take_over_the_dead_and_hand_over_to_the_new() {
    let cluster = NatsCluster::shared();
    let all = units(12);
    let a = host(cluster, "leases1", "a");
    let b = host(cluster, "leases1", "b");
    settle(&[&a, &b], &all, Duration::from_secs(10), |s| {
        disjoint_and_complete(s, &all) && s.iter().all(|h| !h.is_empty())
    });
    assert_eq!(
        a.live_hosts().ok(),
        Some(vec!["a".to_string(), "b".to_string()])
    );

    // c joins: a and b give back exactly the units c should run.
    let c = host(cluster, "leases1", "c");
    settle(&[&a, &b, &c], &all, Duration::from_secs(10), |s| {
        disjoint_and_complete(s, &all) && !s[2].is_empty()
    });
    let hosts = c.live_hosts().expect("hosts");
    for (h, set) in [&a, &b, &c].iter().zip(owned(&[&a, &b, &c])) {
        for u in set {
            assert_eq!(desired_owner(&u, &hosts), Some(h.host()));
        }
    }

    // b dies (stops ticking): within the TTL its units are a's and c's.
    let b_units: BTreeSet<Unit> = owned(&[&b])[0].clone();
    let died = Instant::now();
    settle(&[&a, &c], &all, Duration::from_secs(10), |s| {
        disjoint_and_complete(s, &all)
    });
    let took = died.elapsed();
    assert!(took < TTL * 3, "taken over in {took:?}");
    // b comes back from its pause: its renewals fail, it is told it lost them.
    let back = b.tick(&all).expect("tick");
    let lost: BTreeSet<Unit> = back.lost.into_iter().collect();
    assert_eq!(lost, b_units, "every lease b held is reported lost");
    assert!(b.held().iter().all(|(u, _)| !b_units.contains(u)));
}

#[test]
fn a_held_lease_is_never_taken_and_tokens_grow() {
    let cluster = NatsCluster::shared();
    let config = NatsConfig {
        namespace: "leases2".into(),
        ..NatsConfig::new(cluster.urls().split(',').map(String::from).collect())
    };
    let join = |id: &str| {
        Leases::join(Arc::new(Nats::connect(&config).expect("connect")), id, TTL).expect("join")
    };
    let a = join("a");
    let one = [Unit::new("svc", 0)];
    let first = a.tick(&one).expect("tick");
    assert_eq!(first.acquired.len(), 1, "{first:?}");
    let token = first.acquired[0].1;
    // b joins; whichever host should own the unit, a keeps it until it lets go.
    let b = join("b");
    for _ in 0..3 {
        let got = b.tick(&one).expect("tick");
        assert!(got.acquired.is_empty(), "b took a held lease: {got:?}");
        a.tick(&one).expect("renew");
    }
    let renewed = a.held()[0].1;
    assert!(
        renewed > token,
        "each renewal is a new revision: {token} -> {renewed}"
    );
    // Released, it goes to its desired owner.
    a.release(&one[0]).expect("release");
    let hosts = a.live_hosts().expect("hosts");
    let owner = if desired_owner(&one[0], &hosts) == Some("a") {
        &a
    } else {
        &b
    };
    let got = owner.tick(&one).expect("tick");
    assert_eq!(got.acquired.len(), 1, "{got:?}");
    assert!(got.acquired[0].1 > renewed, "fencing tokens only grow");
    assert!(matches!(
        Leases::join(
            Arc::new(Nats::connect(&config).expect("connect")),
            "no spaces",
            TTL
        ),
        Err(NatsError::Config(_))
    ));
}
