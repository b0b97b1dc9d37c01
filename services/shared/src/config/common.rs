//! The settings every shippy process shares ([`CommonSettings`]) and their sections. Services
//! embed them with `#[serde(flatten)]` beside their own sections (see the `services` module).

use std::{net::IpAddr, path::PathBuf, time::Duration};

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// Settings every shippy process shares. Services embed it with `#[serde(flatten)]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
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
    /// Trace export (OpenTelemetry over OTLP).
    pub telemetry: TelemetrySettings,
    /// The admin HTTP port: Prometheus metrics and plain-HTTP probes.
    pub admin: AdminSettings,
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
        check("telemetry", self.telemetry != new.telemetry);
        check("admin", self.admin != new.admin);
        changed
    }
}

/// `limits.*`: protects a service from overload; changeable at run time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct LimitSettings {
    /// Calls per second the service's API accepts (health checks excepted); 0 = unlimited.
    /// Calls over the limit get RESOURCE_EXHAUSTED.
    pub requests_per_second: u32,
    /// Calls allowed in a burst above the steady rate (at least 1 when limited).
    pub burst: u32,
}

/// `server.*`: listening and advertised address, and the bounds on connections.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct ServerSettings {
    /// Interface to bind (`0.0.0.0` in containers).
    pub host: IpAddr,
    /// Port to bind; 0 picks a free one (the registry advertises the real one).
    pub port: u16,
    /// Address other processes should dial; by default the bound address, or the host's address
    /// when bound to all interfaces. Never `0.0.0.0`.
    pub advertise_host: Option<String>,
    /// A connection must send the HTTP/2 preface within this long after it was accepted, or it is
    /// closed (idle sockets that never speak would otherwise stay open forever); 0 = no limit.
    pub handshake_timeout_ms: u64,
    /// Most connections open at once; a connection accepted beyond it is closed at once (clients
    /// see a reset and may retry elsewhere) rather than left waiting; 0 = no limit.
    pub max_connections: u32,
    /// How often an HTTP/2 ping checks that a quiet client is still there; 0 = never.
    pub keepalive_interval_ms: u64,
    /// A connection whose ping is not answered within this long is closed.
    pub keepalive_timeout_ms: u64,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            host: IpAddr::from([127, 0, 0, 1]),
            port: 0,
            advertise_host: None,
            handshake_timeout_ms: 5_000,
            max_connections: 2_048,
            keepalive_interval_ms: 60_000,
            keepalive_timeout_ms: 20_000,
        }
    }
}

impl ServerSettings {
    /// The handshake deadline of a new connection, if any.
    pub fn handshake_timeout(&self) -> Option<Duration> {
        (self.handshake_timeout_ms > 0).then(|| Duration::from_millis(self.handshake_timeout_ms))
    }

    /// The HTTP/2 keepalive ping interval, if pings are on.
    pub fn keepalive_interval(&self) -> Option<Duration> {
        (self.keepalive_interval_ms > 0).then(|| Duration::from_millis(self.keepalive_interval_ms))
    }

    /// How long a keepalive ping may go unanswered.
    pub fn keepalive_timeout(&self) -> Duration {
        Duration::from_millis(self.keepalive_timeout_ms.max(1))
    }
}

/// Which discovery backend to use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistryBackend {
    /// Files in a directory shared by the processes of one host; needs nothing else.
    #[default]
    Local,
    /// etcd leases and watches.
    Etcd,
}

/// `registry.*`: service discovery.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct ConfigCentreSettings {
    /// Read `/<prefix>/config/<service>` from etcd at start-up and watch it.
    pub enabled: bool,
}

/// Which store backend to use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// An SQLite database file on this host (the default): survives restarts, shared by every
    /// instance on the host, needs no server.
    #[default]
    Sqlite,
    /// In-process memory; lost on restart and not shared between instances. For tests.
    Memory,
    /// MongoDB (or a wire-compatible server): for more than one host.
    Mongodb,
}

/// `store.*`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct StoreSettings {
    /// `sqlite`, `memory` or `mongodb`.
    pub backend: StoreBackend,
    /// The SQLite file.
    pub sqlite: SqliteSettings,
    /// MongoDB connection.
    pub mongodb: MongoSettings,
}

/// `store.sqlite.*`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct SqliteSettings {
    /// The database file; by default `$XDG_STATE_HOME/shippy/shippy.db`, else
    /// `~/.local/state/shippy/shippy.db`. Its directory is created 0700.
    pub path: Option<PathBuf>,
    /// How long a write waits for another process's write to finish before failing as
    /// unavailable.
    pub busy_timeout_ms: Option<u64>,
}

/// `store.mongodb.*`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct MongoSettings {
    /// Connection string; may hold credentials, so it is never logged.
    #[serde(serialize_with = "super::layers::redacted")]
    pub uri: SecretString,
    /// Database name.
    pub database: String,
    /// Write concern `w`: `majority` or a number of nodes (given as a string or a number).
    #[serde(deserialize_with = "super::layers::string_or_number")]
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines, coloured on a terminal.
    #[default]
    Pretty,
    /// One JSON object a line, for log collectors.
    Json,
}

/// `log.*`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
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

/// `telemetry.*`: trace export. The standard `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_SERVICE_NAME`
/// and `OTEL_TRACES_SAMPLER(_ARG)` variables work too; these settings win over them where both
/// are given. Takes effect at start-up.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct TelemetrySettings {
    /// OTLP/gRPC collector to export spans to, e.g. `http://127.0.0.1:4317` (Jaeger, the
    /// OpenTelemetry Collector); unset = no export (trace ids still appear in the logs).
    pub otlp_endpoint: Option<String>,
    /// Share of new traces that are recorded and exported, 0 to 1; a trace started by a caller
    /// follows the caller's decision.
    pub sampling_ratio: f64,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            sampling_ratio: 1.0,
        }
    }
}

// A ratio is a float: compare its bits, so settings stay `Eq` (a NaN equals itself here).
impl PartialEq for TelemetrySettings {
    fn eq(&self, other: &Self) -> bool {
        self.otlp_endpoint == other.otlp_endpoint
            && self.sampling_ratio.to_bits() == other.sampling_ratio.to_bits()
    }
}

impl Eq for TelemetrySettings {}

/// `admin.*`: the admin HTTP port of a service: `/metrics` (Prometheus text), `/livez` and
/// `/readyz` (plain-HTTP probes). Its address is registered in discovery as the instance's
/// `metrics_address`, so Prometheus service discovery and tests can find it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct AdminSettings {
    /// Interface to bind; by default `server.host`.
    pub host: Option<IpAddr>,
    /// Port to bind; 0 (the default) picks a free one.
    pub port: u16,
}
