//! Shared produce keys on the shared cluster, two hosts: a claim excludes
//! the other host until it is done (which answers the parts) or given up
//! (taken over at once), a stalled writer is taken over after the takeover
//! time and its next touch fails.

use std::time::Duration;

use super::*;
use crate::nats::connect_shared;

fn host(id: &str, takeover: Duration) -> ProduceKeys {
    ProduceKeys::open(connect_shared("produce_keys"), id)
        .expect("open")
        .with_takeover(takeover)
}

fn mine(claimed: Claimed) -> Claim {
    match claimed {
        Claimed::Mine(claim) => claim,
        Claimed::Done(parts) => panic!("done already: {parts:?}"),
    }
}

#[test]
fn a_request_is_written_by_one_host_and_answered_everywhere() {
    let takeover = Duration::from_millis(1500);
    let (a, b) = (host("a", takeover), host("b", takeover));
    let key = format!("k-{}", uuid::Uuid::new_v4());

    // A claims and writes two parts; B's duplicate waits until A is done,
    // then answers A's parts.
    let mut claim = mine(a.claim("inc-1", &key).expect("claim"));
    assert!(!claim.taken_over && claim.parts.is_empty());
    let waiting = std::thread::scope(|s| {
        let duplicate = s.spawn(|| {
            let started = Instant::now();
            (b.claim("inc-1", &key).expect("claim"), started.elapsed())
        });
        std::thread::sleep(Duration::from_millis(300));
        a.touch(&mut claim, vec![(0, 10, 3)]).expect("touch");
        std::thread::sleep(Duration::from_millis(300));
        a.finish(claim, true, vec![(0, 10, 3), (2, 7, 1)])
            .expect("finish");
        duplicate.join().expect("duplicate")
    });
    match waiting {
        (Claimed::Done(parts), waited) => {
            assert_eq!(parts, vec![(0, 10, 3), (2, 7, 1)]);
            assert!(waited >= Duration::from_millis(500), "{waited:?}");
        }
        (other, _) => panic!("{other:?}"),
    }
    // The same key of another incarnation (the topic made again) is new.
    let fresh = mine(b.claim("inc-2", &key).expect("claim"));
    assert!(!fresh.taken_over);
    b.finish(fresh, true, vec![]).expect("finish");
}

#[test]
fn a_given_up_request_is_taken_over_at_once_and_a_stalled_one_after_the_takeover_time() {
    let takeover = Duration::from_millis(1500);
    let (a, b) = (host("a", takeover), host("b", takeover));

    // Given up after one part: B takes it over at once, knowing that part.
    let key = format!("k-{}", uuid::Uuid::new_v4());
    let mut claim = mine(a.claim("inc", &key).expect("claim"));
    a.touch(&mut claim, vec![(1, 5, 2)]).expect("touch");
    a.finish(claim, false, vec![(1, 5, 2)]).expect("give up");
    let started = Instant::now();
    let taken = mine(b.claim("inc", &key).expect("claim"));
    assert!(started.elapsed() < takeover, "{:?}", started.elapsed());
    assert!(taken.taken_over);
    assert_eq!(taken.parts, vec![(1, 5, 2)]);
    b.finish(taken, true, vec![(1, 5, 2), (3, 0, 1)])
        .expect("finish");

    // A writer that stalls: B takes over after the takeover time, and A's
    // next touch fails, so it appends nothing more.
    let key = format!("k-{}", uuid::Uuid::new_v4());
    let mut stalled = mine(a.claim("inc", &key).expect("claim"));
    let started = Instant::now();
    let taken = mine(b.claim("inc", &key).expect("claim"));
    assert!(started.elapsed() >= takeover, "{:?}", started.elapsed());
    assert!(taken.taken_over && taken.parts.is_empty());
    assert!(matches!(
        a.touch(&mut stalled, vec![(0, 1, 1)]),
        Err(KeyError::TakenOver(_))
    ));
    b.finish(taken, true, vec![(0, 1, 1)]).expect("finish");
    match a.claim("inc", &key).expect("claim") {
        Claimed::Done(parts) => assert_eq!(parts, vec![(0, 1, 1)]),
        other => panic!("{other:?}"),
    }
}
