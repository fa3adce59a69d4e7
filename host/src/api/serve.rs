//! `weir serve`: open the data directory, build the engine, bind the port,
//! answer requests, and shut down gracefully on SIGINT / SIGTERM — stop
//! taking requests, end long polls and tails, let processors finish their
//! batch and commit, then sync the log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use super::{ApiConfig, AppState, router};
use crate::config::{Backend, ServeConfig};
use crate::log::EventLog;
use crate::log::jetstream::{JetStreamLog, NatsConfig};
use crate::processor::Engine;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the log: {0}")]
    Log(String),
    #[error("cannot start the processor engine: {0}")]
    Engine(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The HTTP layer's settings from the server configuration.
pub fn api_config(config: &ServeConfig) -> ApiConfig {
    ApiConfig {
        admin_token: config.admin_token.clone(),
        max_body_bytes: config.max_body_bytes,
        max_component_bytes: config.max_component_bytes,
        max_wait: config.max_wait,
        header_timeout: config.header_timeout,
        body_timeout: config.body_timeout,
        idempotency_cache_bytes: config.idempotency_cache_bytes,
        ..ApiConfig::default()
    }
}

/// Resolves on the first SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for SIGINT: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// Serve the API on `listener` over the log and the processor engine until
/// `stop` resolves, then drain within `shutdown_timeout` in all: requests
/// in flight finish (connections still open after it are closed),
/// processors commit with what is left of it, the log syncs.
pub async fn serve_with(
    listener: TcpListener,
    log: Arc<dyn EventLog>,
    engine: Arc<Engine>,
    api: ApiConfig,
    shutdown_timeout: Duration,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let header_timeout = api.header_timeout;
    let state = AppState::new(log.clone(), engine.clone(), api, stop_rx);
    let app = router(state);
    let stopped_at = Arc::new(std::sync::OnceLock::new());
    let signalled = {
        let stopped_at = stopped_at.clone();
        async move {
            stop.await;
            let _ = stopped_at.set(tokio::time::Instant::now());
            tracing::info!("shutting down: finishing requests, draining processors");
            let _ = stop_tx.send(true);
        }
    };
    super::http::serve(listener, app, header_timeout, shutdown_timeout, signalled).await;
    let deadline = stopped_at
        .get()
        .copied()
        .unwrap_or_else(tokio::time::Instant::now)
        + shutdown_timeout;
    let draining = tokio::task::spawn_blocking(move || engine.shutdown());
    match tokio::time::timeout_at(deadline, draining).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!("engine shutdown panicked: {e}"),
        Err(_) => tracing::warn!(
            "processors did not drain within {shutdown_timeout:?}; uncommitted batches will be redone on restart"
        ),
    }
    match tokio::task::spawn_blocking(move || log.flush()).await {
        Ok(Ok(())) => tracing::info!("log synced; bye"),
        Ok(Err(e)) => tracing::error!("final log sync failed: {e}"),
        Err(e) => tracing::error!("final log sync panicked: {e}"),
    }
    Ok(())
}

/// Bind the configured address. The bound address is printed as
/// `weir listening on http://ADDR` (port 0 picks a free port).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

/// Open everything under `config.data_dir` and serve until SIGINT/SIGTERM.
pub async fn run(config: ServeConfig, repair: bool) -> Result<(), ServeError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| ServeError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let (event_log, embedded, jetstream) = open_log(&config, repair).await?;
    let runtime = crate::runtime::Runtime::new(crate::runtime::RuntimeConfig {
        cache_dir: Some(config.data_dir.join("cache")),
        ..crate::runtime::RuntimeConfig::default()
    })
    .map_err(|e| ServeError::Engine(e.to_string()))?;
    let engine_config = crate::processor::EngineConfig {
        store_cache_bytes: config.store_cache_bytes,
        ..crate::processor::EngineConfig::new(config.data_dir.clone(), config.fsync)
    };
    let engine_log = event_log.clone();
    let lease_ttl = match &config.backend {
        Backend::JetStream { lease_ttl, .. } => *lease_ttl,
        Backend::Embedded => crate::processor::DEFAULT_LEASE_TTL,
    };
    let processors = tokio::task::spawn_blocking(move || match jetstream {
        Some(log) => {
            // Unique among live hosts; a restarted host is a new member.
            let host = format!("h{}", uuid::Uuid::new_v4().simple());
            tracing::info!(%host, "joining the cluster");
            crate::processor::Engine::open_cluster(engine_config, log, runtime, &host, lease_ttl)
        }
        None => crate::processor::Engine::open(engine_config, engine_log, runtime),
    })
    .await
    .map_err(|e| ServeError::Engine(e.to_string()))?
    .map_err(|e| ServeError::Engine(e.to_string()))?;

    let listener = bind(config.listen).await?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: config.listen,
        source,
    })?;
    // Tests and scripts read this line to find a port chosen with :0.
    println!("weir listening on http://{addr}");
    tracing::info!(%addr, data_dir = %config.data_dir.display(), backend = ?config.backend, "weir serving");
    if config.admin_token.is_none() {
        tracing::warn!(
            "admin routes are open to anyone who can reach {addr}: set --admin-token-file, WEIR_ADMIN_TOKEN or --admin-token"
        );
    }
    let result = serve_with(
        listener,
        event_log,
        Arc::new(processors),
        api_config(&config),
        config.shutdown_timeout,
        shutdown_signal(),
    )
    .await;
    if let Some(log) = embedded {
        let closing = tokio::task::spawn_blocking(move || log.close()).await;
        if let Ok(Err(e)) = closing {
            tracing::error!("closing the log: {e}");
        }
    }
    result
}

/// The log as `serve` opened it, and which backend it is.
type OpenedLog = (
    Arc<dyn EventLog>,
    Option<Arc<crate::log::Log>>,
    Option<Arc<JetStreamLog>>,
);

/// Open the configured log backend: the embedded log under
/// `data_dir/log` (also returned, to be closed at the end), or a connection
/// to the JetStream cluster (also returned, for the cluster's processors).
async fn open_log(config: &ServeConfig, repair: bool) -> Result<OpenedLog, ServeError> {
    let (servers, replicas, namespace) = match &config.backend {
        Backend::Embedded => {
            let mut log_config = crate::log::LogConfig::new(config.data_dir.join("log"));
            log_config.default_fsync = config.fsync;
            log_config.repair = repair;
            let dir = log_config.dir.clone();
            let log = tokio::task::spawn_blocking(move || crate::log::Log::open(log_config))
                .await
                .map_err(|e| ServeError::Log(e.to_string()))?
                .map_err(|e| {
                    let hint = if matches!(e, crate::log::LogError::Corrupt { .. }) {
                        "; `weir serve --repair` truncates the log there (losing what follows)"
                    } else {
                        ""
                    };
                    ServeError::Log(format!("{}: {e}{hint}", dir.display()))
                })?;
            let log = Arc::new(log);
            return Ok((log.clone(), Some(log), None));
        }
        Backend::JetStream {
            servers,
            replicas,
            namespace,
            ..
        } => (servers.clone(), *replicas, namespace.clone()),
    };
    let nats_config = NatsConfig {
        namespace,
        replicas,
        ..NatsConfig::new(servers)
    };
    let log = tokio::task::spawn_blocking(move || JetStreamLog::open(&nats_config))
        .await
        .map_err(|e| ServeError::Log(e.to_string()))?
        .map_err(|e| ServeError::Log(e.to_string()))?;
    let log = Arc::new(log);
    // Streams a crash left without a topic; ten minutes old at least, so a
    // topic another host is creating right now keeps its streams.
    let sweeper = log.clone();
    tokio::task::spawn_blocking(move || match sweeper.sweep_orphans(ORPHAN_AGE) {
        Ok(swept) if !swept.is_empty() => {
            tracing::warn!(streams = ?swept, "deleted partition streams no topic refers to")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot sweep orphan partition streams: {e}"),
    });
    Ok((log.clone(), None, Some(log)))
}

/// How old a partition stream without a topic must be to be deleted.
const ORPHAN_AGE: Duration = Duration::from_secs(600);
