//! `weir serve` configuration: built-in defaults, overridden by an optional
//! TOML file, overridden by environment variables (`WEIR_*`), overridden by
//! command-line flags. Unknown TOML keys are an error, so typos do not pass
//! silently.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::log::FsyncPolicy as Fsync;

/// Everything `weir serve` can be told, all optional: the same shape for the
/// TOML file and for the flags / environment.
#[derive(Debug, Clone, Default, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct ServeOptions {
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, env = "WEIR_LISTEN", hide_env_values = true)]
    pub listen: Option<SocketAddr>,
    /// Data directory [default: ./weir-data]
    #[arg(long, env = "WEIR_DATA_DIR", hide_env_values = true)]
    pub data_dir: Option<PathBuf>,
    /// Bearer token required on admin routes (at least 8 characters; unset leaves them open)
    #[arg(long, env = "WEIR_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// File holding the admin bearer token (so it is not visible in `ps`)
    #[arg(long, env = "WEIR_ADMIN_TOKEN_FILE", hide_env_values = true)]
    pub admin_token_file: Option<PathBuf>,
    /// Durability: always | never | interval:<ms> [default: always]
    #[arg(long, env = "WEIR_FSYNC", hide_env_values = true)]
    pub fsync: Option<String>,
    /// Largest request body on data routes, bytes [default: 8 MiB]
    #[arg(long, env = "WEIR_MAX_BODY_BYTES", hide_env_values = true)]
    pub max_body_bytes: Option<usize>,
    /// Largest deploy body (component + manifest), bytes [default: 64 MiB]
    #[arg(long, env = "WEIR_MAX_COMPONENT_BYTES", hide_env_values = true)]
    pub max_component_bytes: Option<usize>,
    /// Longest a long-poll or a waiting command may take, ms [default: 30000]
    #[arg(long, env = "WEIR_MAX_WAIT_MS", hide_env_values = true)]
    pub max_wait_ms: Option<u64>,
    /// How long shutdown waits for requests and processors to finish, ms [default: 10000]
    #[arg(long, env = "WEIR_SHUTDOWN_TIMEOUT_MS", hide_env_values = true)]
    pub shutdown_timeout_ms: Option<u64>,
    /// How long a client may take to send a request's head (and how long an idle connection stays open), ms [default: 30000]
    #[arg(long, env = "WEIR_HEADER_TIMEOUT_MS", hide_env_values = true)]
    pub header_timeout_ms: Option<u64>,
    /// How long a client may take to send a request's body, ms [default: 60000]
    #[arg(long, env = "WEIR_BODY_TIMEOUT_MS", hide_env_values = true)]
    pub body_timeout_ms: Option<u64>,
    /// Memory for the store's page cache (state, aggregates, checkpoints), MiB [default: 256]
    #[arg(long, env = "WEIR_STORE_CACHE_MIB", hide_env_values = true)]
    pub store_cache_mib: Option<usize>,
    /// Memory for idempotency keys and their answers, MiB [default: 64]
    #[arg(long, env = "WEIR_IDEMPOTENCY_CACHE_MIB", hide_env_values = true)]
    pub idempotency_cache_mib: Option<usize>,
    /// Log format: text | json [default: text]
    #[arg(long, env = "WEIR_LOG_FORMAT", hide_env_values = true)]
    pub log_format: Option<String>,
    /// Where topics live: embedded (this machine's disk) | jetstream (a NATS JetStream cluster, shared by every host) [default: embedded]
    #[arg(long, env = "WEIR_BACKEND", hide_env_values = true)]
    pub backend: Option<String>,
    /// NATS server URLs for the jetstream backend, comma-separated (nats://host:4222,...)
    #[arg(long, env = "WEIR_NATS", hide_env_values = true)]
    pub nats: Option<String>,
    /// Replicas of every JetStream stream weir creates, 1..=5 [default: 3]
    #[arg(long, env = "WEIR_NATS_REPLICAS", hide_env_values = true)]
    pub nats_replicas: Option<usize>,
    /// Prefix of weir's buckets, streams and subjects on NATS (keeps several weir clusters apart) [default: weir]
    #[arg(long, env = "WEIR_NATS_NAMESPACE", hide_env_values = true)]
    pub nats_namespace: Option<String>,
    /// How long a host's leases on processor partitions live without renewal: a dead host's partitions move to the others within it, at least 500 [default: 3000]
    #[arg(long, env = "WEIR_LEASE_TTL_MS", hide_env_values = true)]
    pub lease_ttl_ms: Option<u64>,
}

impl ServeOptions {
    /// `self` where set, else `lower`.
    fn over(self, lower: ServeOptions) -> ServeOptions {
        let token_layer = if self.admin_token.is_some() || self.admin_token_file.is_some() {
            TokenSource {
                admin_token: self.admin_token,
                admin_token_file: self.admin_token_file,
            }
        } else {
            TokenSource {
                admin_token: lower.admin_token,
                admin_token_file: lower.admin_token_file,
            }
        };
        ServeOptions {
            listen: self.listen.or(lower.listen),
            data_dir: self.data_dir.or(lower.data_dir),
            // The token and its file are one setting: the higher layer
            // that names either decides.
            admin_token: token_layer.admin_token,
            admin_token_file: token_layer.admin_token_file,
            fsync: self.fsync.or(lower.fsync),
            max_body_bytes: self.max_body_bytes.or(lower.max_body_bytes),
            max_component_bytes: self.max_component_bytes.or(lower.max_component_bytes),
            max_wait_ms: self.max_wait_ms.or(lower.max_wait_ms),
            shutdown_timeout_ms: self.shutdown_timeout_ms.or(lower.shutdown_timeout_ms),
            header_timeout_ms: self.header_timeout_ms.or(lower.header_timeout_ms),
            body_timeout_ms: self.body_timeout_ms.or(lower.body_timeout_ms),
            store_cache_mib: self.store_cache_mib.or(lower.store_cache_mib),
            idempotency_cache_mib: self.idempotency_cache_mib.or(lower.idempotency_cache_mib),
            log_format: self.log_format.or(lower.log_format),
            backend: self.backend.or(lower.backend),
            nats: self.nats.or(lower.nats),
            nats_replicas: self.nats_replicas.or(lower.nats_replicas),
            nats_namespace: self.nats_namespace.or(lower.nats_namespace),
            lease_ttl_ms: self.lease_ttl_ms.or(lower.lease_ttl_ms),
        }
    }
}

/// The resolved configuration of a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub admin_token: Option<String>,
    pub fsync: Fsync,
    pub max_body_bytes: usize,
    pub max_component_bytes: usize,
    pub max_wait: Duration,
    pub shutdown_timeout: Duration,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    /// Bytes of the store's page cache.
    pub store_cache_bytes: usize,
    /// Bytes for idempotency keys and their answers.
    pub idempotency_cache_bytes: usize,
    pub log_json: bool,
    pub backend: Backend,
}

/// Where the log (topics) lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// Segment files under `data_dir/log` (one machine).
    Embedded,
    /// A NATS JetStream cluster every host shares (`log::jetstream`).
    JetStream {
        servers: Vec<String>,
        replicas: usize,
        namespace: String,
        /// Lifetime of this host's partition leases.
        lease_ttl: Duration,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid setting: {0}")]
    Invalid(String),
}

impl ServeConfig {
    /// Resolve flags/environment over the TOML file (if any) over defaults.
    pub fn resolve(cli: ServeOptions, file: Option<&Path>) -> Result<ServeConfig, ConfigError> {
        let from_file = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                toml::from_str::<ServeOptions>(&text).map_err(|e| ConfigError::Parse {
                    path: path.to_owned(),
                    message: e.to_string(),
                })?
            }
            None => ServeOptions::default(),
        };
        let o = cli.over(from_file);
        let fsync = match o.fsync.as_deref() {
            None => Fsync::Always,
            Some(s) => s
                .parse()
                .map_err(|e: crate::log::LogError| ConfigError::Invalid(e.to_string()))?,
        };
        let log_json = match o.log_format.as_deref() {
            None | Some("text") => false,
            Some("json") => true,
            Some(other) => {
                return Err(ConfigError::Invalid(format!(
                    "log_format must be text or json, not {other:?}"
                )));
            }
        };
        let admin_token = admin_token(o.admin_token, o.admin_token_file)?;
        let backend = backend(BackendOptions {
            name: o.backend,
            nats: o.nats,
            replicas: o.nats_replicas,
            namespace: o.nats_namespace,
            lease_ttl_ms: o.lease_ttl_ms,
        })?;
        Ok(ServeConfig {
            listen: o
                .listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            data_dir: o.data_dir.unwrap_or_else(|| PathBuf::from("./weir-data")),
            admin_token,
            fsync,
            max_body_bytes: o.max_body_bytes.unwrap_or(8 << 20),
            max_component_bytes: o.max_component_bytes.unwrap_or(64 << 20),
            max_wait: Duration::from_millis(o.max_wait_ms.unwrap_or(30_000)),
            shutdown_timeout: Duration::from_millis(o.shutdown_timeout_ms.unwrap_or(10_000)),
            header_timeout: positive_ms("header_timeout_ms", o.header_timeout_ms, 30_000)?,
            body_timeout: positive_ms("body_timeout_ms", o.body_timeout_ms, 60_000)?,
            store_cache_bytes: mebibytes("store_cache_mib", o.store_cache_mib, 256)?,
            idempotency_cache_bytes: mebibytes(
                "idempotency_cache_mib",
                o.idempotency_cache_mib,
                64,
            )?,
            log_json,
            backend,
        })
    }
}

/// The backend settings as given.
struct BackendOptions {
    name: Option<String>,
    nats: Option<String>,
    replicas: Option<usize>,
    namespace: Option<String>,
    lease_ttl_ms: Option<u64>,
}

/// The log backend and its settings; NATS settings without the jetstream
/// backend are an error (they would be silently ignored).
fn backend(o: BackendOptions) -> Result<Backend, ConfigError> {
    let BackendOptions {
        name,
        nats,
        replicas,
        namespace,
        lease_ttl_ms,
    } = o;
    match name.as_deref().map(str::trim) {
        None | Some("embedded") => {
            if nats.is_some() || replicas.is_some() || namespace.is_some() || lease_ttl_ms.is_some()
            {
                return Err(ConfigError::Invalid(
                    "nats, nats_replicas, nats_namespace and lease_ttl_ms need backend = \"jetstream\""
                        .into(),
                ));
            }
            Ok(Backend::Embedded)
        }
        Some("jetstream") => {
            let servers: Vec<String> = nats
                .as_deref()
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            if servers.is_empty() {
                return Err(ConfigError::Invalid(
                    "backend jetstream needs the NATS servers: --nats nats://host:4222[,...] (or WEIR_NATS)"
                        .into(),
                ));
            }
            let replicas = replicas.unwrap_or(3);
            if !(1..=5).contains(&replicas) {
                return Err(ConfigError::Invalid(format!(
                    "nats_replicas must be 1..=5, not {replicas}"
                )));
            }
            let namespace = namespace.unwrap_or_else(|| "weir".into());
            crate::nats::validate_namespace(&namespace)
                .map_err(|e| ConfigError::Invalid(e.to_string()))?;
            let lease_ttl =
                lease_ttl_ms.map_or(crate::processor::DEFAULT_LEASE_TTL, Duration::from_millis);
            if lease_ttl < Duration::from_millis(500) {
                return Err(ConfigError::Invalid(format!(
                    "lease_ttl_ms must be at least 500, not {}",
                    lease_ttl.as_millis()
                )));
            }
            Ok(Backend::JetStream {
                servers,
                replicas,
                namespace,
                lease_ttl,
            })
        }
        Some(other) => Err(ConfigError::Invalid(format!(
            "backend must be embedded or jetstream, not {other:?}"
        ))),
    }
}

struct TokenSource {
    admin_token: Option<String>,
    admin_token_file: Option<PathBuf>,
}

/// The admin token, given directly or in a file (its trailing newline
/// aside). An empty one is an error, never "no auth".
fn admin_token(
    token: Option<String>,
    file: Option<PathBuf>,
) -> Result<Option<String>, ConfigError> {
    let token = match (token, file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::Invalid(
                "give admin_token or admin_token_file, not both".into(),
            ));
        }
        (Some(token), None) => token,
        (None, Some(path)) => std::fs::read_to_string(&path)
            .map_err(|source| ConfigError::Read { path, source })?
            .trim_end_matches(['\r', '\n'])
            .to_owned(),
        (None, None) => return Ok(None),
    };
    if token.trim().is_empty() {
        return Err(ConfigError::Invalid(
            "the admin token is empty; set one of at least 8 characters, or none to leave admin routes open"
                .into(),
        ));
    }
    if token.len() < 8 {
        return Err(ConfigError::Invalid(
            "admin_token must be at least 8 characters".into(),
        ));
    }
    Ok(Some(token))
}

/// A timeout in ms that must not be zero (a zero timeout refuses everything).
fn positive_ms(name: &str, value: Option<u64>, default: u64) -> Result<Duration, ConfigError> {
    match value.unwrap_or(default) {
        0 => Err(ConfigError::Invalid(format!("{name} must be above 0"))),
        ms => Ok(Duration::from_millis(ms)),
    }
}

/// A memory budget in MiB as bytes: at least 1 MiB (a cache of nothing
/// would forget idempotency keys or read every state from disk) and at most
/// 1 TiB.
fn mebibytes(name: &str, value: Option<usize>, default: usize) -> Result<usize, ConfigError> {
    match value.unwrap_or(default) {
        mib @ 1..=1_048_576 => Ok(mib << 20),
        other => Err(ConfigError::Invalid(format!(
            "{name} must be 1..=1048576 (MiB), not {other}"
        ))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = ServeConfig::resolve(ServeOptions::default(), None).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.data_dir, PathBuf::from("./weir-data"));
        assert_eq!(c.fsync, Fsync::Always);
        assert_eq!(c.admin_token, None);
        assert_eq!(c.store_cache_bytes, 256 << 20);
        assert_eq!(c.idempotency_cache_bytes, 64 << 20);
    }

    #[test]
    fn memory_budgets_are_mebibytes_within_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weir.toml");
        std::fs::write(
            &path,
            "store_cache_mib = 32
idempotency_cache_mib = 8
",
        )
        .unwrap();
        let c = ServeConfig::resolve(ServeOptions::default(), Some(&path)).unwrap();
        assert_eq!(c.store_cache_bytes, 32 << 20);
        assert_eq!(c.idempotency_cache_bytes, 8 << 20);
        for bad in [0, 1_048_577] {
            let cli = ServeOptions {
                store_cache_mib: Some(bad),
                ..Default::default()
            };
            let err = ServeConfig::resolve(cli, None).unwrap_err().to_string();
            assert!(err.contains("store_cache_mib"), "{err}");
        }
        let cli = ServeOptions {
            idempotency_cache_mib: Some(0),
            ..Default::default()
        };
        let err = ServeConfig::resolve(cli, None).unwrap_err().to_string();
        assert!(err.contains("idempotency_cache_mib"), "{err}");
    }

    #[test]
    fn flags_override_file_override_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weir.toml");
        std::fs::write(
            &path,
            "listen = \"0.0.0.0:9000\"\ndata_dir = \"/srv/weir\"\nfsync = \"interval:5\"\nadmin_token = \"file-secret\"\n",
        )
        .unwrap();
        let cli = ServeOptions {
            admin_token: Some("flag-secret".into()),
            ..Default::default()
        };
        let c = ServeConfig::resolve(cli, Some(&path)).unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(c.data_dir, PathBuf::from("/srv/weir"));
        assert_eq!(c.fsync, Fsync::Interval(Duration::from_millis(5)));
        assert_eq!(c.admin_token.as_deref(), Some("flag-secret"));
    }

    #[test]
    fn the_admin_token_can_come_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "from-a-file-123\n").unwrap();
        let from_file = |token: Option<&str>| ServeOptions {
            admin_token: token.map(str::to_owned),
            admin_token_file: Some(path.clone()),
            ..Default::default()
        };
        let c = ServeConfig::resolve(from_file(None), None).unwrap();
        assert_eq!(c.admin_token.as_deref(), Some("from-a-file-123"));
        assert!(matches!(
            ServeConfig::resolve(from_file(Some("also-a-token")), None),
            Err(ConfigError::Invalid(_))
        ));
        // A flag naming the file wins over a token in the TOML file.
        let toml = dir.path().join("weir.toml");
        std::fs::write(&toml, "admin_token = \"toml-token-1\"\n").unwrap();
        let c = ServeConfig::resolve(from_file(None), Some(&toml)).unwrap();
        assert_eq!(c.admin_token.as_deref(), Some("from-a-file-123"));
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(
            ServeConfig::resolve(from_file(None), None),
            Err(ConfigError::Invalid(_))
        ));
        let missing = ServeOptions {
            admin_token_file: Some(dir.path().join("nope")),
            ..Default::default()
        };
        assert!(matches!(
            ServeConfig::resolve(missing, None),
            Err(ConfigError::Read { .. })
        ));
    }

    #[test]
    fn bad_files_and_values_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weir.toml");
        std::fs::write(&path, "listne = \"x\"\n").unwrap();
        assert!(matches!(
            ServeConfig::resolve(ServeOptions::default(), Some(&path)),
            Err(ConfigError::Parse { .. })
        ));
        assert!(matches!(
            ServeConfig::resolve(
                ServeOptions::default(),
                Some(&dir.path().join("missing.toml"))
            ),
            Err(ConfigError::Read { .. })
        ));
        let bad = ServeOptions {
            fsync: Some("sometimes".into()),
            ..Default::default()
        };
        assert!(matches!(
            ServeConfig::resolve(bad, None),
            Err(ConfigError::Invalid(_))
        ));
        let never = ServeOptions {
            header_timeout_ms: Some(0),
            ..Default::default()
        };
        assert!(matches!(
            ServeConfig::resolve(never, None),
            Err(ConfigError::Invalid(_))
        ));
        for empty in ["", "   "] {
            let empty = ServeOptions {
                admin_token: Some(empty.into()),
                ..Default::default()
            };
            assert!(matches!(
                ServeConfig::resolve(empty, None),
                Err(ConfigError::Invalid(_))
            ));
        }
        let short = ServeOptions {
            admin_token: Some("abc".into()),
            ..Default::default()
        };
        assert!(matches!(
            ServeConfig::resolve(short, None),
            Err(ConfigError::Invalid(_))
        ));
    }

    #[test]
    fn the_jetstream_backend_needs_servers_and_nothing_is_silently_ignored() {
        let c = ServeConfig::resolve(ServeOptions::default(), None).unwrap();
        assert_eq!(c.backend, Backend::Embedded);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("weir.toml");
        std::fs::write(
            &file,
            "backend = \"jetstream\"\nnats = \"nats://a:4222, nats://b:4222\"\n",
        )
        .unwrap();
        let cli = ServeOptions {
            nats_replicas: Some(1),
            ..Default::default()
        };
        let c = ServeConfig::resolve(cli, Some(&file)).unwrap();
        assert_eq!(
            c.backend,
            Backend::JetStream {
                servers: vec!["nats://a:4222".into(), "nats://b:4222".into()],
                replicas: 1,
                namespace: "weir".into(),
                lease_ttl: Duration::from_secs(3),
            }
        );
        let refused = [
            ServeOptions {
                backend: Some("jetstream".into()),
                ..Default::default()
            },
            ServeOptions {
                nats: Some("nats://a:4222".into()),
                ..Default::default()
            },
            ServeOptions {
                backend: Some("kafka".into()),
                ..Default::default()
            },
            ServeOptions {
                backend: Some("jetstream".into()),
                nats: Some("nats://a:4222".into()),
                nats_replicas: Some(7),
                ..Default::default()
            },
            ServeOptions {
                backend: Some("jetstream".into()),
                nats: Some("nats://a:4222".into()),
                nats_namespace: Some("a.b".into()),
                ..Default::default()
            },
            ServeOptions {
                backend: Some("jetstream".into()),
                nats: Some("nats://a:4222".into()),
                lease_ttl_ms: Some(100),
                ..Default::default()
            },
            ServeOptions {
                lease_ttl_ms: Some(1000),
                ..Default::default()
            },
        ];
        for bad in refused {
            let shown = format!("{bad:?}");
            assert!(
                matches!(
                    ServeConfig::resolve(bad, None),
                    Err(ConfigError::Invalid(_))
                ),
                "{shown}"
            );
        }
    }
}
