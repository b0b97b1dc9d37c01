//! The settings every shippy process shares ([`CommonSettings`]) and their sections. Services
//! embed them with `#[serde(flatten)]` beside their own sections (see the `services` module).

use std::{net::IpAddr, path::PathBuf, time::Duration};

use secrecy::SecretString;
use serde::Deserialize;

/// Settings every shippy process shares. Services embed it with `#[serde(flatten)]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct CommonSettings {
    /// Where the gRPC server listens and what it advertises.
    pub server: ServerSettings,
    /// Service discovery backend.
    pub registry: RegistrySettings,
    /// etcd connection, shared by the etcd registry and the config centre.
    pub etcd: EtcdSettings,
    /// Whether to read and watch this service's settings in etcd.
    pub config_centre: ConfigCentreSettings,
    /// Persistence backend.
    pub store: StoreSettings,
    /// Logging.
    pub log: LogSettings,
    /// Outgoing calls to other services.
    pub client: ClientSettings,
    /// Graceful shutdown.
    pub shutdown: ShutdownSettings,
    /// Request rate limits of the service's own API.
    pub limits: LimitSettings,
}

impl CommonSettings {
    /// Sections that differ between `self` and `new` and only take effect after a restart.
    pub fn restart_needed(&self, new: &Self) -> Vec<&'static str> {
        let mut changed = Vec::new();
        let mut check = |name, differs: bool| {
            if differs {
                changed.push(name);
            }
        };
        check("server", self.server != new.server);
        check("registry", self.registry != new.registry);
        check("etcd", self.etcd != new.etcd);
        check("config_centre", self.config_centre != new.config_centre);
        check("store", self.store != new.store);
        check("log.format", self.log.format != new.log.format);
        check(
            "client.connect_timeout_ms",
            self.client.connect_timeout_ms != new.client.connect_timeout_ms,
        );
        check("shutdown", self.shutdown != new.shutdown);
        changed
    }
}

/// `limits.*`: protects a service from overload; changeable at run time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct LimitSettings {
    /// Calls per second the service's API accepts (health checks excepted); 0 = unlimited.
    /// Calls over the limit get RESOURCE_EXHAUSTED.
    pub requests_per_second: u32,
    /// Calls allowed in a burst above the steady rate (at least 1 when limited).
    pub burst: u32,
}

/// `server.*`: listening and advertised address.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ServerSettings {
    /// Interface to bind (`0.0.0.0` in containers).
    pub host: IpAddr,
    /// Port to bind; 0 picks a free one (the registry advertises the real one).
    pub port: u16,
    /// Address other processes should dial; by default the bound address, or the host's address
    /// when bound to all interfaces. Never `0.0.0.0`.
    pub advertise_host: Option<String>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            host: IpAddr::from([127, 0, 0, 1]),
            port: 0,
            advertise_host: None,
        }
    }
}

/// Which discovery backend to use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistryBackend {
    /// Files in a directory shared by the processes of one host; needs nothing else.
    #[default]
    Local,
    /// etcd leases and watches.
    Etcd,
}

/// `registry.*`: service discovery.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct RegistrySettings {
    /// `local` or `etcd`.
    pub backend: RegistryBackend,
    /// How long a registration outlives its last heartbeat (a killed instance vanishes after this).
    pub ttl_secs: u64,
    /// Settings of the local backend.
    pub local: LocalRegistrySettings,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        Self {
            backend: RegistryBackend::Local,
            ttl_secs: 10,
            local: LocalRegistrySettings::default(),
        }
    }
}

impl RegistrySettings {
    /// The registration TTL.
    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.ttl_secs.max(1))
    }
}

/// `registry.local.*`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct LocalRegistrySettings {
    /// Directory holding the registrations; by default `$XDG_RUNTIME_DIR/shippy/registry`, else
    /// `<tmp>/shippy-<uid>/registry`.
    pub dir: Option<PathBuf>,
    /// How often subscribers rescan the directory.
    pub poll_ms: u64,
}

impl Default for LocalRegistrySettings {
    fn default() -> Self {
        Self {
            dir: None,
            poll_ms: 200,
        }
    }
}

/// `etcd.*`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct EtcdSettings {
    /// Client URLs of the cluster members, e.g. `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// Root of every key shippy writes: `/<prefix>/services/...`, `/<prefix>/config/...`.
    pub prefix: String,
    /// Timeout for connecting to a member.
    pub connect_timeout_ms: u64,
    /// Timeout for one etcd request.
    pub request_timeout_ms: u64,
}

impl Default for EtcdSettings {
    fn default() -> Self {
        Self {
            endpoints: vec!["http://127.0.0.1:2379".to_owned()],
            prefix: "shippy".to_owned(),
            connect_timeout_ms: 2_000,
            request_timeout_ms: 3_000,
        }
    }
}

/// `config_centre.*`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ConfigCentreSettings {
    /// Read `/<prefix>/config/<service>` from etcd at start-up and watch it.
    pub enabled: bool,
}

/// Which store backend to use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// In-process memory; lost on restart.
    #[default]
    Memory,
    /// MongoDB (or a wire-compatible server).
    Mongodb,
}

/// `store.*`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct StoreSettings {
    /// `memory` or `mongodb`.
    pub backend: StoreBackend,
    /// MongoDB connection.
    pub mongodb: MongoSettings,
}

/// `store.mongodb.*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct MongoSettings {
    /// Connection string; may hold credentials, so it is never logged.
    pub uri: SecretString,
    /// Database name.
    pub database: String,
    /// Write concern `w`: `majority` or a number of nodes.
    pub write_concern: String,
    /// Largest connection pool.
    pub max_pool_size: u32,
    /// How long to wait for a usable server before failing a call.
    pub server_selection_timeout_ms: u64,
    /// TCP connect timeout.
    pub connect_timeout_ms: u64,
}

// The URI is a secret, so it has no derived comparison; compare it explicitly.
impl PartialEq for MongoSettings {
    fn eq(&self, other: &Self) -> bool {
        use secrecy::ExposeSecret;
        self.uri.expose_secret() == other.uri.expose_secret()
            && self.database == other.database
            && self.write_concern == other.write_concern
            && self.max_pool_size == other.max_pool_size
            && self.server_selection_timeout_ms == other.server_selection_timeout_ms
            && self.connect_timeout_ms == other.connect_timeout_ms
    }
}

impl Eq for MongoSettings {}

impl Default for MongoSettings {
    fn default() -> Self {
        Self {
            uri: SecretString::from("mongodb://127.0.0.1:27017"),
            database: "shippy".to_owned(),
            write_concern: "majority".to_owned(),
            max_pool_size: 20,
            server_selection_timeout_ms: 2_000,
            connect_timeout_ms: 2_000,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines, coloured on a terminal.
    #[default]
    Pretty,
    /// One JSON object a line, for log collectors.
    Json,
}

/// `log.*`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct LogSettings {
    /// `RUST_LOG`-style filter, e.g. `info,shippy_vessel=debug`. Changeable at run time.
    pub level: String,
    /// `pretty` or `json`.
    pub format: LogFormat,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Pretty,
        }
    }
}

/// `client.*`: calls this process makes to other services.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ClientSettings {
    /// Deadline of every call, including the wait for a connection.
    pub timeout_ms: u64,
    /// Timeout for opening a connection to one instance.
    pub connect_timeout_ms: u64,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            timeout_ms: 5_000,
            connect_timeout_ms: 1_000,
        }
    }
}

impl ClientSettings {
    /// The per-call deadline.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.max(1))
    }
}

/// `shutdown.*`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ShutdownSettings {
    /// After deregistering, keep serving this long so clients see the instance leave before it stops
    /// accepting calls.
    pub drain_ms: u64,
    /// Longest wait for in-flight calls once the server stops accepting.
    pub grace_ms: u64,
}

impl Default for ShutdownSettings {
    fn default() -> Self {
        Self {
            drain_ms: 1_000,
            grace_ms: 10_000,
        }
    }
}
