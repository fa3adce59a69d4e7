//! One connection to NATS JetStream, shared by everything cluster mode keeps
//! there (the log backend, host membership, partition leases): the client, a
//! small tokio runtime of its own, and a bridge that lets blocking code wait
//! on its requests from any thread.
//!
//! Promises: every request is bounded by the configured timeout; nothing
//! here panics on what the server answers; dropping the connection never
//! blocks (its runtime shuts down in the background).

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::{self, kv};

/// How to reach JetStream and how weir lays itself out there.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// NATS server URLs (`nats://host:port`); any live one will do, the client
    /// learns the rest of the cluster from it.
    pub servers: Vec<String>,
    /// Prefix of every bucket, stream and subject weir creates.
    pub namespace: String,
    /// Replicas of every stream and bucket (1..=5; 3 on a three-node cluster).
    pub replicas: usize,
    /// How long one request may take.
    pub timeout: Duration,
}

impl NatsConfig {
    pub fn new(servers: Vec<String>) -> Self {
        NatsConfig {
            servers,
            namespace: "weir".into(),
            replicas: 3,
            timeout: Duration::from_secs(5),
        }
    }

    fn validate(&self) -> Result<(), NatsError> {
        validate_namespace(&self.namespace)?;
        if self.servers.is_empty() {
            return Err(NatsError::Config(
                "cluster mode needs at least one NATS server URL".into(),
            ));
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(NatsError::Config(format!(
                "JetStream replicas must be within 1..=5, not {}",
                self.replicas
            )));
        }
        if self.timeout.is_zero() {
            return Err(NatsError::Config(
                "the NATS request timeout must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// Namespaces keep several weir clusters apart on one NATS deployment:
/// 1..=32 ASCII letters, digits, `_` or `-` (valid in bucket, stream and
/// subject names alike).
pub fn validate_namespace(ns: &str) -> Result<(), NatsError> {
    let ok = !ns.is_empty()
        && ns.len() <= 32
        && ns
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(NatsError::Config(format!(
            "JetStream namespace {ns:?}: use 1 to 32 ASCII letters, digits, '_' or '-'"
        )))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("invalid NATS setting: {0}")]
    Config(String),
    /// A request failed or timed out, or the server could not be reached.
    #[error("{0}")]
    Request(String),
}

impl NatsError {
    pub fn request(what: &str, e: impl std::fmt::Display) -> NatsError {
        NatsError::Request(format!("{what}: {e}"))
    }
}

/// The longest one blocking call through [`Nats::run`] may take: far above
/// any single request's timeout, so only a stalled operation reaches it.
pub const OPERATION_LIMIT: Duration = Duration::from_secs(60);

/// A live connection. Share it as `Arc<Nats>`.
pub struct Nats {
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    js: jetstream::Context,
    max_payload: usize,
    namespace: String,
    replicas: usize,
}

impl Drop for Nats {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which tokio forbids inside async code.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Nats {
    /// Connect (any listed server will do) or fail naming the servers.
    pub fn connect(config: &NatsConfig) -> Result<Nats, NatsError> {
        config.validate()?;
        let addrs = config
            .servers
            .iter()
            .map(|s| {
                s.parse::<async_nats::ServerAddr>()
                    .map_err(|e| NatsError::Config(format!("NATS server URL {s:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("weir-nats")
            .enable_all()
            .build()
            .map_err(|e| NatsError::request("starting the NATS client runtime", e))?;
        let handle = runtime.handle().clone();
        let timeout = config.timeout;
        let servers = config.servers.join(",");
        let connected = block_on(&handle, async move {
            let client = async_nats::ConnectOptions::new()
                .name("weir")
                .connection_timeout(timeout)
                .request_timeout(Some(timeout))
                .connect(addrs)
                .await
                .map_err(|e| {
                    NatsError::request(&format!("cannot connect to NATS at {servers}"), e)
                })?;
            let max_payload = client.server_info().max_payload;
            let mut js = jetstream::new(client);
            js.set_timeout(timeout);
            Ok::<_, NatsError>((js, max_payload))
        })?;
        let (js, max_payload) = connected?;
        Ok(Nats {
            runtime: Some(runtime),
            handle,
            js,
            max_payload,
            namespace: config.namespace.clone(),
            replicas: config.replicas,
        })
    }

    /// Run `fut` on the connection's runtime and block until it is done.
    /// Works from any thread, also inside another runtime (it parks the
    /// caller); fails if the task panicked or took longer than
    /// [`OPERATION_LIMIT`] — a stalled subscription or lost reply then
    /// becomes an error its caller retries, never a thread stuck for good.
    pub fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, NatsError> {
        block_on(&self.handle, async move {
            tokio::time::timeout(OPERATION_LIMIT, fut).await
        })?
        .map_err(|_| {
            NatsError::request(
                "a NATS operation",
                format!("no answer within {OPERATION_LIMIT:?}"),
            )
        })
    }

    /// Start `fut` on the connection's runtime without waiting for it.
    pub fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        self.handle.spawn(fut);
    }

    /// The runtime the client runs on (to drop client objects inside it).
    pub fn handle(&self) -> tokio::runtime::Handle {
        self.handle.clone()
    }

    pub fn js(&self) -> &jetstream::Context {
        &self.js
    }

    /// Largest message the servers accept.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// Open the bucket `config.bucket`, creating it (with this connection's
    /// replicas) when it does not exist yet. Two hosts creating it at once
    /// both succeed: JetStream accepts an identical create.
    pub async fn key_value(&self, mut config: kv::Config) -> Result<kv::Store, NatsError> {
        let bucket = config.bucket.clone();
        config.num_replicas = self.replicas;
        let js = self.js.clone();
        let store = making(&format!("the bucket {bucket}"), || {
            let (js, config) = (js.clone(), config.clone());
            async move {
                match js.get_key_value(&config.bucket).await {
                    Ok(store) => Ok(store),
                    Err(_) => js.create_key_value(config).await,
                }
            }
        })
        .await?;
        // A bucket just made answers reads with "no responders" until its
        // stream has a leader: hand it out once it answers.
        let deadline = tokio::time::Instant::now() + BUCKET_READY;
        loop {
            match store.get("weir-ready-probe").await {
                Ok(_) => return Ok(store),
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(NatsError::request(
                        &format!("the bucket {bucket} does not answer"),
                        e,
                    ));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

/// How long a bucket may take to answer after it was opened or made.
const BUCKET_READY: Duration = Duration::from_secs(15);

/// Run `make` (open or create something replicated) until it succeeds or
/// [`BUCKET_READY`] passes: a cluster busy creating streams (several hosts
/// starting at once) may let a creation request time out.
pub async fn making<T, E: std::fmt::Display, F: Future<Output = Result<T, E>>>(
    what: &str,
    mut make: impl FnMut() -> F,
) -> Result<T, NatsError> {
    let deadline = tokio::time::Instant::now() + BUCKET_READY;
    loop {
        match make().await {
            Ok(made) => return Ok(made),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(NatsError::request(&format!("making {what}"), e));
            }
            Err(e) => {
                tracing::debug!("making {what}: {e}; trying again");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

fn block_on<T: Send + 'static>(
    handle: &tokio::runtime::Handle,
    fut: impl Future<Output = T> + Send + 'static,
) -> Result<T, NatsError> {
    let task = handle.spawn(fut);
    futures::executor::block_on(task)
        .map_err(|e| NatsError::request("a NATS client task failed", e))
}

/// A connection to the test binary's shared three-node cluster, in
/// `namespace` (each test module its own, so they do not see each other).
#[cfg(test)]
pub(crate) fn connect_shared(namespace: &str) -> std::sync::Arc<Nats> {
    let urls = weir_testkit::nats::NatsCluster::shared().urls();
    let config = NatsConfig {
        namespace: namespace.into(),
        ..NatsConfig::new(urls.split(',').map(String::from).collect())
    };
    #[allow(clippy::expect_used)]
    std::sync::Arc::new(Nats::connect(&config).expect("connect to the shared test cluster"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_before_connecting() {
        assert!(validate_namespace("weir").is_ok());
        assert!(validate_namespace("prod-2_eu").is_ok());
        for bad in ["", "a.b", "a b", "a*", ">", &"x".repeat(33)] {
            assert!(validate_namespace(bad).is_err(), "{bad:?}");
        }
        let bad = [
            NatsConfig::new(vec![]),
            NatsConfig {
                replicas: 0,
                ..NatsConfig::new(vec!["nats://127.0.0.1:4222".into()])
            },
            NatsConfig {
                timeout: Duration::ZERO,
                ..NatsConfig::new(vec!["nats://127.0.0.1:4222".into()])
            },
            NatsConfig::new(vec!["nats://127.0.0.1:notaport".into()]),
        ];
        for config in bad {
            assert!(
                matches!(Nats::connect(&config), Err(NatsError::Config(_))),
                "{config:?}"
            );
        }
    }
}
