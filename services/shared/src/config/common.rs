//! The settings every shippy process shares ([`CommonSettings`]) and their sections. Services
//! embed them with `#[serde(flatten)]` beside their own sections (see the `services` module).

use std::{collections::BTreeMap, net::IpAddr, path::PathBuf, time::Duration};

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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct LimitSettings {
    /// Calls per second the service's API accepts (health checks excepted); 0 = unlimited.
    /// Calls over the limit get RESOURCE_EXHAUSTED.
    pub requests_per_second: u32,
    /// Calls allowed in a burst above the steady rate (at least 1 when limited).
    pub burst: u32,
    /// Most calls the service's API serves at once (health checks excepted); 0 = no limit. A call
    /// beyond it is shed at once with UNAVAILABLE (never queued), so callers retry elsewhere. The
    /// default sits far above the concurrency of normal load (`make bench`), so it only cuts the
    /// queue of an overloaded instance.
    pub max_concurrent_calls: u32,
    /// Below that ceiling, shed a method's calls while it is overloaded (its recent calls queue),
    /// at the calls in flight it has shown it can serve (`runtime::adaptive`); off = only the
    /// ceiling.
    pub adaptive: bool,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            requests_per_second: 0,
            burst: 0,
            max_concurrent_calls: 512,
            adaptive: true,
        }
    }
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
    /// Most connections open at once from one client address (an IPv6 client: its /64), so that
    /// one client cannot take all of `max_connections`; a connection beyond it is closed at once.
    /// 0 = no limit. The gateway's `gateway.trusted_proxies` are exempt on its HTTP port; behind
    /// any other proxy or sidecar that opens a connection per request, raise it.
    pub max_connections_per_client: u32,
    /// How often an HTTP/2 ping checks that a quiet client is still there; 0 = never.
    pub keepalive_interval_ms: u64,
    /// A connection whose ping is not answered within this long is closed.
    pub keepalive_timeout_ms: u64,
    /// The version this instance registers in discovery, which routing weights and version pins
    /// select by (`client.routing`, `x-shippy-route-<service>`); by default the binary's version.
    pub version: Option<String>,
    /// Threads that run the service's tasks; 0 (the default) is one per core the process may use
    /// (a container's CPU limit counts). Read at start from the file and the environment only:
    /// the runtime exists before the config centre is reached.
    pub worker_threads: u8,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            host: IpAddr::from([127, 0, 0, 1]),
            port: 0,
            advertise_host: None,
            handshake_timeout_ms: 5_000,
            max_connections: 2_048,
            max_connections_per_client: 256,
            keepalive_interval_ms: 60_000,
            keepalive_timeout_ms: 20_000,
            version: None,
            worker_threads: 0,
        }
    }
}

impl ServerSettings {
    /// How many worker threads the runtime gets, when set (`None`: one per usable core).
    pub fn worker_threads(&self) -> Option<usize> {
        (self.worker_threads > 0).then_some(usize::from(self.worker_threads))
    }

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

/// `client.*`: calls this process makes to other services, through the balanced channel
/// (`discovery::balance`). Everything but `connect_timeout_ms` applies live, to the next call.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct ClientSettings {
    /// Deadline of a call when the caller being served sent none (`grpc-timeout`); a caller's
    /// deadline is passed on instead, minus what is already spent.
    pub timeout_ms: u64,
    /// Timeout for opening a connection to one instance.
    pub connect_timeout_ms: u64,
    /// Longest wait for one attempt of an idempotent call before it is tried on another instance
    /// (a frozen instance costs this, not the whole deadline); 0 = the whole deadline.
    pub attempt_timeout_ms: u64,
    /// Attempts per call, the first included (retries go to other instances when there are any).
    pub max_attempts: u32,
    /// Retry budget: retries may add this share (percent) of the calls of the last 10 s...
    pub retry_budget_percent: u32,
    /// ...plus this many retries per second, so a lone failed call can still be retried (at most
    /// 1 000 000 is taken).
    pub retry_min_per_second: u32,
    /// Failures in a row (unreachable, `UNAVAILABLE`, attempt timed out) that eject an instance.
    pub eject_after_failures: u32,
    /// First ejection's length; each repeat offence doubles it, up to `eject_max_ms`.
    pub eject_base_ms: u64,
    /// Longest ejection.
    pub eject_max_ms: u64,
    /// Most instances of a service that may be ejected at once, in percent (never all of them).
    pub max_ejected_percent: u32,
    /// Adaptive throttling (Google SRE): once calls to a service fail, reject locally the share
    /// `(requests - k * accepted) / (requests + 1)` of new ones; `k` in percent (150 = 1.5). Lower
    /// rejects sooner; 0 turns the breaker off.
    pub breaker_k_percent: u32,
    /// An instance that left the registry stays usable for this long by callers that have no
    /// other instance (it may still be draining, or the registry may have lost its data).
    pub departed_grace_ms: u64,
    /// Routing weights per version of a target service, e.g. `client.routing.vessel:
    /// "0.1.0=90,0.2.0=10"` (or a map); unlisted versions get none. No entry: every version.
    pub routing: BTreeMap<String, VersionWeights>,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            timeout_ms: 5_000,
            connect_timeout_ms: 1_000,
            attempt_timeout_ms: 1_000,
            max_attempts: 3,
            retry_budget_percent: 20,
            retry_min_per_second: 10,
            eject_after_failures: 3,
            eject_base_ms: 2_000,
            eject_max_ms: 30_000,
            max_ejected_percent: 50,
            breaker_k_percent: 150,
            departed_grace_ms: 5_000,
            routing: BTreeMap::new(),
        }
    }
}

impl ClientSettings {
    /// The per-call deadline when the caller sent none.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.max(1))
    }
}

/// Routing weights by version, written `0.1.0=90,0.2.0=10` (what an environment variable can
/// hold) or as a map `{"0.1.0": 90, "0.2.0": 10}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VersionWeights(BTreeMap<String, u32>);

impl VersionWeights {
    /// Weights from `(version, weight)` pairs.
    pub fn new(weights: impl IntoIterator<Item = (String, u32)>) -> Self {
        Self(weights.into_iter().collect())
    }

    /// The weight of `version` (0 when unlisted).
    pub fn of(&self, version: &str) -> u32 {
        self.0.get(version).copied().unwrap_or(0)
    }

    /// Whether no version is listed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The listed versions and their weights.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u32)> {
        self.0
            .iter()
            .map(|(version, weight)| (version.as_str(), *weight))
    }
}

impl std::str::FromStr for VersionWeights {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut weights = BTreeMap::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (version, weight) = part.split_once('=').ok_or_else(|| {
                format!("routing weights are `version=weight,...`; {part:?} has no `=`")
            })?;
            let version = version.trim();
            if version.is_empty() || version.len() > 64 || version.chars().any(char::is_control) {
                return Err(format!("{version:?} is not a version"));
            }
            let weight = weight.trim().parse::<u32>().map_err(|_| {
                format!("the weight of version {version} must be a whole number, not {weight:?}")
            })?;
            weights.insert(version.to_owned(), weight);
        }
        Ok(Self(weights))
    }
}

impl<'de> Deserialize<'de> for VersionWeights {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // A weight may arrive as a number (YAML, JSON) or as text (environment variables).
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Weight {
            Number(u32),
            Text(String),
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Text(String),
            Map(BTreeMap<String, Weight>),
        }
        match Form::deserialize(deserializer)? {
            Form::Text(text) => text.parse().map_err(serde::de::Error::custom),
            Form::Map(map) => {
                let pairs = map.into_iter().map(|(version, weight)| match weight {
                    Weight::Number(n) => format!("{version}={n}"),
                    Weight::Text(text) => format!("{version}={text}"),
                });
                pairs
                    .collect::<Vec<_>>()
                    .join(",")
                    .parse()
                    .map_err(serde::de::Error::custom)
            }
        }
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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct AdminSettings {
    /// Interface to bind; by default `server.host`.
    pub host: Option<IpAddr>,
    /// Port to bind; 0 (the default) picks a free one.
    pub port: u16,
    /// Whether RPC, client, store and registry metrics are recorded (`/metrics` then serves only
    /// the process metrics). Off costs nothing per call; it exists to measure what metrics cost.
    pub metrics: bool,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            host: None,
            port: 0,
            metrics: true,
        }
    }
}
