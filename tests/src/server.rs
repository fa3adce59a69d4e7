//! Start the real `weir` binary for an end-to-end test: a fresh temp data
//! dir, a free loopback port (the server binds port 0 and prints its
//! address), readiness via `/healthz`, JSON helpers, graceful stop, kill -9
//! and restart on the same data. Each server is independent, so tests run in
//! parallel. The server's log goes to `server.log` next to its data dir and
//! is printed when a helper fails.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a server may take to start or stop.
const STARTUP: Duration = Duration::from_secs(60);

/// An HTTP answer: status, the body parsed as JSON (or as a JSON string
/// when it is not JSON) and the raw bytes.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub json: Value,
    pub bytes: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl Resp {
    /// The stable error code of an error answer (`"<none>"` otherwise).
    pub fn code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or("<none>")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A running `weir serve`.
pub struct Server {
    bin: PathBuf,
    args: Vec<String>,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    token: Option<String>,
    agent: ureq::Agent,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

impl Server {
    /// Start `bin serve` with `extra` arguments on a fresh data dir.
    pub fn start(bin: impl AsRef<Path>, extra: &[&str]) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("weir-e2e-")
            .tempdir()
            .expect("temp dir");
        let mut server = Server {
            bin: bin.as_ref().to_owned(),
            args: extra.iter().map(|s| s.to_string()).collect(),
            dir,
            child: None,
            url: String::new(),
            token: None,
            agent: agent(),
        };
        server.spawn();
        server
    }

    /// Send this bearer token on every request from now on.
    pub fn with_token(mut self, token: &str) -> Server {
        self.token = Some(token.to_owned());
        self
    }

    pub fn set_token(&mut self, token: Option<&str>) {
        self.token = token.map(str::to_owned);
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// Everything the server wrote to stderr so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("server log file");
        let mut child = Command::new(&self.bin)
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(&self.args)
            .env(
                "RUST_LOG",
                std::env::var("WEIR_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                if let Some(addr) = line.strip_prefix("weir listening on ") {
                    let _ = tx.send(addr.trim().to_owned());
                    break;
                }
                line.clear();
            }
            // Keep draining so the server never blocks on a full pipe.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let url = match rx.recv_timeout(STARTUP) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                panic!(
                    "weir serve did not start (exit {status:?}); log:\n{}",
                    self.logs()
                );
            }
        };
        self.child = Some(child);
        self.url = url;
        self.wait_healthy();
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + STARTUP;
        while Instant::now() < deadline {
            if let Ok(r) = self.try_request("GET", "/healthz", None, &[])
                && r.status == 200
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "weir serve at {} never became healthy; log:\n{}",
            self.url,
            self.logs()
        );
    }

    fn try_request(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &[u8])>,
        headers: &[(&str, &str)],
    ) -> Result<Resp, ureq::Error> {
        let url = format!("{}{path}", self.url);
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        macro_rules! with_headers {
            ($req:expr) => {{
                let mut req = $req;
                if let Some(a) = &auth {
                    req = req.header("authorization", a);
                }
                for (k, v) in headers {
                    req = req.header(*k, *v);
                }
                req
            }};
        }
        let resp = match (method, body) {
            ("GET", _) => with_headers!(self.agent.get(&url)).call(),
            ("DELETE", _) => with_headers!(self.agent.delete(&url)).call(),
            (m, body) => {
                let (ct, bytes) = body.unwrap_or(("application/json", b""));
                let req = match m {
                    "PUT" => self.agent.put(&url),
                    "PATCH" => self.agent.patch(&url),
                    _ => self.agent.post(&url),
                };
                with_headers!(req.header("content-type", ct)).send(bytes)
            }
        }?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let mut body = resp.into_body();
        let bytes = body.with_config().limit(1 << 30).read_to_vec()?;
        let json = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok(Resp {
            status,
            json,
            bytes,
            headers,
        })
    }

    /// Any request; panics (with the server log) if the server cannot be reached.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &[u8])>,
        headers: &[(&str, &str)],
    ) -> Resp {
        self.try_request(method, path, body, headers)
            .unwrap_or_else(|e| panic!("{method} {path} failed: {e}; log:\n{}", self.logs()))
    }

    pub fn get(&self, path: &str) -> Resp {
        self.request("GET", path, None, &[])
    }

    pub fn delete(&self, path: &str) -> Resp {
        self.request("DELETE", path, None, &[])
    }

    pub fn post_json(&self, path: &str, body: &Value) -> Resp {
        self.request(
            "POST",
            path,
            Some(("application/json", body.to_string().as_bytes())),
            &[],
        )
    }

    pub fn post_bytes(&self, path: &str, content_type: &str, body: &[u8]) -> Resp {
        self.request("POST", path, Some((content_type, body)), &[])
    }

    /// Create a topic, panicking unless it was created.
    pub fn create_topic(&self, name: &str, partitions: u32) {
        let r = self.post_json(
            "/topics",
            &serde_json::json!({"name": name, "partitions": partitions}),
        );
        assert_eq!(r.status, 201, "create topic {name}: {}", r.json);
    }

    /// Deploy a plugin (manifest + component bytes); returns the answer.
    pub fn deploy(&self, manifest: &Value, component: &[u8]) -> Resp {
        let name = manifest["name"].as_str().unwrap_or("unnamed");
        let manifest_text = manifest.to_string();
        self.request(
            "PUT",
            &format!("/plugins/{name}"),
            Some(("application/wasm", component)),
            &[("weir-manifest", &manifest_text)],
        )
    }

    /// Every record of a partition from offset 0 to its current end.
    pub fn read_all(&self, topic: &str, partition: u32) -> Vec<Value> {
        let mut out = Vec::new();
        let mut offset = 0u64;
        loop {
            let r = self.get(&format!(
                "/topics/{topic}/partitions/{partition}/records?offset={offset}&limit=10000"
            ));
            assert_eq!(r.status, 200, "read {topic}/{partition}: {}", r.json);
            let records = r.json["records"].as_array().cloned().unwrap_or_default();
            if records.is_empty() {
                return out;
            }
            offset = r.json["next_offset"].as_u64().expect("next_offset");
            out.extend(records);
        }
    }

    /// The `stamp` header of each record of `topic` read through this
    /// server, parsed (the stamp enricher's mark of the version that
    /// processed it), with the record's numeric value: (value, stamp).
    pub fn stamped(&self, topic: &str, partition: u32) -> Vec<(u64, u32)> {
        self.read_all(topic, partition)
            .iter()
            .map(|r| {
                let value = r["value"].as_u64().expect("numeric value");
                let stamp = r["headers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|h| h["name"] == "stamp")
                    .and_then(|h| h["value"].as_str())
                    .and_then(|v| v.parse().ok())
                    .expect("stamped");
                (value, stamp)
            })
            .collect()
    }

    /// The committed input offsets of `processor`, by (topic, partition),
    /// as its status reports them (empty while the status does not answer).
    pub fn committed_offsets(&self, processor: &str) -> BTreeMap<(String, u32), u64> {
        let status = self.get(&format!("/plugins/{processor}")).json;
        status["partitions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                Some((
                    (
                        p["topic"].as_str()?.to_string(),
                        p["partition"].as_u64()? as u32,
                    ),
                    p["committed_offset"].as_u64()?,
                ))
            })
            .collect()
    }

    /// Records in a topic: the sum of its partitions' end offsets (0 when it
    /// does not exist).
    pub fn total_records(&self, topic: &str) -> u64 {
        let r = self.get(&format!("/topics/{topic}"));
        r.json["partitions"].as_array().map_or(0, |ps| {
            ps.iter()
                .map(|p| p["end_offset"].as_u64().unwrap_or(0))
                .sum()
        })
    }

    /// Poll `check` until it is true or `timeout` passes (then panic with `what`).
    pub fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&Server) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if check(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("timed out waiting for {what}; log:\n{}", self.logs());
    }

    /// SIGTERM and wait for a graceful exit.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server is running");
        // SAFETY: plain kill(2) on the child's pid, which we still own (not yet reaped).
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(status) = child.try_wait().expect("wait for weir") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("weir did not stop on SIGTERM; log:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// kill -9: no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start again on the same data dir with the same arguments.
    pub fn restart(&mut self) {
        assert!(
            self.child.is_none(),
            "stop or kill the server before restarting it"
        );
        self.spawn();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}
