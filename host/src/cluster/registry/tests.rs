//! The registry on the shared cluster, two hosts: components round trip,
//! concurrent deploys never share a version number, and a follower sees what
//! the other host changes.

use std::time::Duration;

use super::*;
use crate::store::VersionRecord;

fn host() -> Registry {
    Registry::open(crate::nats::connect_shared("registry")).expect("open")
}

/// Add a version (as a deploy does), starting the record if there is none.
fn deploy(registry: &Registry, name: &str, sha: &str) -> u32 {
    let written = registry
        .update(name, |current| {
            let mut record = current.unwrap_or(PluginRecord {
                name: name.into(),
                kind: "enricher".into(),
                versions: vec![],
                active_version: 0,
                paused: false,
                stopped: None,
                read_generation: 0,
                rebuilding_generation: None,
            });
            let version = record.versions.iter().map(|v| v.version).max().unwrap_or(0) + 1;
            record.versions.push(VersionRecord {
                version,
                sha256: sha.into(),
                manifest: serde_json::json!({"name": name}),
                deployed_at_ms: 0,
            });
            record.active_version = version;
            Ok(Some(record))
        })
        .expect("deploy");
    match written {
        Change::Put(record, _) => record.active_version,
        Change::Deleted(..) => 0,
    }
}

#[test]
fn hosts_share_one_registry_without_losing_a_deploy() {
    let (a, b) = (host(), host());
    let component = vec![7u8; 300_000];
    let sha = a.put_component(&component).expect("put");
    assert_eq!(
        b.put_component(&component).ok(),
        Some(sha.clone()),
        "idempotent"
    );
    assert_eq!(b.component(&sha).ok(), Some(component));
    assert!(matches!(
        b.component(&"0".repeat(64)),
        Err(RegistryError::MissingComponent(_))
    ));

    let follower = b.follow().expect("follow");
    // Both hosts deploy under one name at once: every deploy gets its own version.
    let versions: Vec<u32> = std::thread::scope(|s| {
        let hosts = [&a, &b];
        let deployers: Vec<_> = (0..2)
            .map(|i| {
                let (registry, sha) = (hosts[i], sha.clone());
                s.spawn(move || {
                    (0..10)
                        .map(|_| deploy(registry, "orders.enrich", &sha))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        deployers
            .into_iter()
            .flat_map(|d| d.join().expect("deployer"))
            .collect()
    });
    let mut sorted = versions.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (1..=20).collect::<Vec<_>>(), "{versions:?}");
    let record = b.get("orders.enrich").expect("get").expect("deployed");
    assert_eq!(record.versions.len(), 20);
    assert_eq!(a.list().expect("list").len(), 1);

    // Paused through a, deleted through b: the follower saw every step.
    a.update("orders.enrich", |r| {
        Ok(r.map(|mut r| {
            r.paused = true;
            r
        }))
    })
    .expect("pause");
    let refused = a.update("orders.enrich", |_| {
        Err(RegistryError::Rejected("no".into()))
    });
    assert!(matches!(refused, Err(RegistryError::Rejected(_))));
    b.update("orders.enrich", |_| Ok(None)).expect("delete");
    assert_eq!(a.get("orders.enrich").ok(), Some(None));
    let mut seen = Vec::new();
    while let Ok(change) = follower.recv_timeout(Duration::from_secs(5)) {
        let done = matches!(change, Change::Deleted(..));
        seen.push(change);
        if done {
            break;
        }
    }
    let puts: Vec<&PluginRecord> = seen
        .iter()
        .filter_map(|c| match c {
            Change::Put(r, _) => Some(r),
            Change::Deleted(..) => None,
        })
        .collect();
    assert!(
        puts.last()
            .is_some_and(|r| r.paused && r.versions.len() == 20),
        "{seen:?}"
    );
    assert!(
        matches!(seen.last(), Some(Change::Deleted(name, _)) if name == "orders.enrich"),
        "{seen:?}"
    );
    // Revisions grow with every change, whichever host made it.
    let revisions: Vec<u64> = seen.iter().map(Change::revision).collect();
    assert!(revisions.windows(2).all(|w| w[0] < w[1]), "{revisions:?}");
    // A name deleted can be deployed again, from version 1.
    assert_eq!(deploy(&a, "orders.enrich", &sha), 1);
}
