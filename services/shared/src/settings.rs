//! Typed settings, parsed once at start-up.
//!
//! Layers, lowest first: the defaults in these structs, an optional file (`--config`, YAML/JSON/TOML),
//! the etcd config centre (when enabled), then `SHIPPY_` environment variables with `__` between levels
//! (`SHIPPY_REGISTRY__BACKEND=etcd`). Lists in env vars are comma-separated.

use std::{
    fmt,
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use config::{Config, Environment, File, FileFormat};
use secrecy::SecretString;
use serde::{Deserialize, de::DeserializeOwned};

/// Environment variable prefix for every setting.
pub const ENV_PREFIX: &str = "SHIPPY";

/// Keys whose env var values are comma-separated lists.
const LIST_KEYS: &[&str] = &["etcd.endpoints"];

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The settings file named on the command line does not exist.
    #[error("settings file {0} does not exist")]
    MissingFile(PathBuf),
    /// A layer could not be parsed, or a value has the wrong type (the message names the key).
    #[error("invalid settings: {0}")]
    Invalid(#[from] config::ConfigError),
}

/// Settings every shippy process shares. Services embed it with `#[serde(flatten)]`.
#[derive(Debug, Clone, Default, Deserialize)]
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
    /// The settings file these settings were read from (`--config`), for reloads. Not a setting.
    #[serde(skip)]
    pub config_file: Option<PathBuf>,
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

/// A service's complete settings: the shared part plus its own sections.
pub trait ServiceSettings: DeserializeOwned + Clone + Send + Sync + fmt::Debug + 'static {
    /// The shared part.
    fn common(&self) -> &CommonSettings;
    /// The shared part, mutably.
    fn common_mut(&mut self) -> &mut CommonSettings;
    /// Changed settings that only take effect after a restart (the service's own sections
    /// included); by default the shared ones.
    fn restart_needed(&self, new: &Self) -> Vec<&'static str> {
        self.common().restart_needed(new.common())
    }
}

/// Loads a service's settings from every layer, the etcd config centre included when
/// `config_centre.enabled` (the layers below it say where etcd is).
pub async fn load<T: ServiceSettings>(service: &str, file: Option<&Path>) -> anyhow::Result<T> {
    let mut settings: T = layered(file, None)?;
    if settings.common().config_centre.enabled {
        let centre =
            crate::config_centre::ConfigCentre::connect(&settings.common().etcd, service).await?;
        match centre.fetch().await? {
            Some(document) => {
                settings = layered(file, Some(&document)).map_err(|e| {
                    anyhow::anyhow!("config centre document {} is invalid: {e}", centre.key())
                })?;
                tracing::info!(key = centre.key(), "settings read from the config centre");
            }
            None => tracing::info!(
                key = centre.key(),
                "no config centre document; using file and environment"
            ),
        }
    }
    settings.common_mut().config_file = file.map(Path::to_owned);
    Ok(settings)
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
    /// Directory holding the registrations; see [`crate::discovery::local::default_dir`].
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

/// Builds settings of type `T` from every layer. `centre` is the config-centre document (YAML or
/// JSON, as stored in etcd), placed between the file and the environment.
pub fn layered<T: DeserializeOwned>(
    file: Option<&Path>,
    centre: Option<&str>,
) -> Result<T, SettingsError> {
    layered_with_env(file, centre, None)
}

/// Like [`layered`], with the environment given explicitly (tests use this instead of the
/// process environment).
pub fn layered_with_env<T: DeserializeOwned>(
    file: Option<&Path>,
    centre: Option<&str>,
    env: Option<config::Map<String, String>>,
) -> Result<T, SettingsError> {
    let mut builder = Config::builder();
    if let Some(path) = file {
        if !path.exists() {
            return Err(SettingsError::MissingFile(path.to_owned()));
        }
        builder = builder.add_source(File::from(path).required(true));
    }
    if let Some(doc) = centre {
        // YAML is a superset of JSON, so one parser takes both.
        builder = builder.add_source(File::from_str(doc, FileFormat::Yaml));
    }
    let mut environment = Environment::with_prefix(ENV_PREFIX)
        .prefix_separator("_")
        .separator("__")
        .try_parsing(true)
        .list_separator(",");
    for key in LIST_KEYS {
        environment = environment.with_list_parse_key(key);
    }
    if let Some(vars) = env {
        environment = environment.source(Some(vars));
    }
    let config = builder.add_source(environment).build()?;
    // Services embed `CommonSettings` with `#[serde(flatten)]`, which hides the key of a bad value
    // from the config crate; deserializing the shared part on its own first names the key.
    config.clone().try_deserialize::<CommonSettings>()?;
    Ok(config.try_deserialize()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    struct Svc {
        #[serde(flatten)]
        common: CommonSettings,
        extra: Extra,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    struct Extra {
        flag: bool,
    }

    fn env(pairs: &[(&str, &str)]) -> Option<config::Map<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn defaults_apply_without_any_layer() {
        let s: Svc = layered_with_env(None, None, env(&[])).expect("defaults load");
        assert_eq!(s.common.registry.backend, RegistryBackend::Local);
        assert_eq!(s.common.registry.ttl_secs, 10);
        assert_eq!(s.common.server.port, 0);
        assert!(!s.extra.flag);
    }

    #[test]
    fn layers_override_in_order_file_centre_env() {
        let mut file = tempfile::Builder::new()
            .suffix(".yaml")
            .tempfile()
            .expect("temp file");
        writeln!(
            file,
            "server:\n  port: 7000\nlog:\n  level: debug\nextra:\n  flag: true"
        )
        .expect("write");
        let centre = "log:\n  level: warn\nregistry:\n  ttl_secs: 3\n";
        let s: Svc = layered_with_env(
            Some(file.path()),
            Some(centre),
            env(&[
                ("SHIPPY_REGISTRY__TTL_SECS", "5"),
                ("SHIPPY_ETCD__ENDPOINTS", "http://a:2379,http://b:2379"),
                ("SHIPPY_REGISTRY__BACKEND", "etcd"),
            ]),
        )
        .expect("layers load");
        assert_eq!(s.common.server.port, 7000, "file beats defaults");
        assert_eq!(s.common.log.level, "warn", "centre beats file");
        assert_eq!(s.common.registry.ttl_secs, 5, "env beats centre");
        assert_eq!(s.common.registry.backend, RegistryBackend::Etcd);
        assert_eq!(
            s.common.etcd.endpoints,
            vec!["http://a:2379", "http://b:2379"]
        );
        assert!(s.extra.flag);
    }

    #[test]
    fn wrong_type_names_the_key() {
        let err = layered_with_env::<Svc>(None, Some("server:\n  port: lots\n"), env(&[]))
            .expect_err("port must be a number");
        assert!(err.to_string().contains("port"), "{err}");
    }

    #[test]
    fn missing_file_is_reported() {
        let err = layered_with_env::<Svc>(Some(Path::new("/nope/shippy.yaml")), None, env(&[]))
            .expect_err("missing file");
        assert!(err.to_string().contains("/nope/shippy.yaml"), "{err}");
    }
}
