//! Cluster mode's backend (issue #11): the suite runs its own NATS
//! JetStream cluster on loopback. Steps of the cluster mode build on this.

use weir_testkit::nats::NatsCluster;

#[test]
fn a_three_node_jetstream_cluster_forms_on_loopback() {
    let cluster = NatsCluster::start(3);
    let leaders: Vec<Option<String>> = (0..3).map(|i| cluster.meta_leader(i)).collect();
    assert!(leaders[0].is_some(), "no meta leader: {leaders:?}");
    assert!(
        leaders.iter().all(|l| *l == leaders[0]),
        "every node sees the same meta leader: {leaders:?}"
    );
    for node in 0..3 {
        let jsz = cluster.monitor(node, "/jsz").expect("/jsz");
        assert_eq!(jsz["meta_cluster"]["cluster_size"], 3, "{jsz}");
        let varz = cluster.monitor(node, "/varz").expect("/varz");
        let version = varz["version"].as_str().unwrap_or_default();
        // Atomic batch publish, which cluster commits rely on, needs 2.12+.
        assert!(version.starts_with("2.15."), "nats-server {version}");
    }
    assert_eq!(cluster.urls().split(',').count(), 3);
}
