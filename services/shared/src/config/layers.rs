//! Building settings from their layers, lowest first: the defaults in the structs, an optional file
//! (`--config`, YAML/JSON/TOML), the etcd config centre's document (when enabled), then `SHIPPY_`
//! environment variables with `__` between levels (`SHIPPY_REGISTRY__BACKEND=etcd`). Lists in env
//! vars are comma-separated.

use std::{
    collections::HashSet,
    fmt,
    path::{Path, PathBuf},
};

use config::{Config, Environment, File, FileFormat, Value, ValueKind};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::CommonSettings;

/// Environment variable prefix for every setting.
pub const ENV_PREFIX: &str = "SHIPPY";

/// Keys whose env var values are comma-separated lists.
const LIST_KEYS: &[&str] = &[
    "etcd.endpoints",
    "gateway.cors.allowed_origins",
    "gateway.trusted_proxies",
];

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The settings file named on the command line does not exist.
    #[error("settings file {0} does not exist")]
    MissingFile(PathBuf),
    /// A layer could not be parsed, or a value has the wrong type (the message names the key).
    /// Not a `#[source]`: the message already says all the cause says, and an error printer that
    /// follows sources would print it twice.
    #[error("invalid settings: {0}")]
    Invalid(config::ConfigError),
}

impl From<config::ConfigError> for SettingsError {
    fn from(error: config::ConfigError) -> Self {
        Self::Invalid(match error {
            config::ConfigError::FileParse { uri, cause } => config::ConfigError::FileParse {
                uri,
                cause: without_source_lines(&cause.to_string()).into(),
            },
            other => other,
        })
    }
}

/// A parser's message without the lines it quotes from the file: the TOML parser shows the line
/// it stopped at, and in a settings file that line can hold a secret (an unquoted MongoDB URI, a
/// JWT secret with a bad escape). Where (line and column) and why are kept.
fn without_source_lines(message: &str) -> String {
    let quoted = |line: &str| {
        let line = line.trim_start();
        line.trim_start_matches(|c: char| c.is_ascii_digit())
            .trim_start()
            .starts_with('|')
    };
    message
        .lines()
        .filter(|line| !quoted(line))
        .collect::<Vec<_>>()
        .join("; ")
}

/// `SHIPPY_*` environment variables that are not settings (the CLI's and the tools' own), so no
/// "unknown setting" warning is given for them.
const NOT_SETTINGS: &[&str] = &[
    "config_file",
    "token",
    "token_file",
    "password",
    "output",
    "bin_dir",
    "etcd_bin",
    "ferretdb_bin",
    "version",
];

/// A key some layer set that no setting has: a typo, most likely. It is ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownKey {
    /// The key, e.g. `log.levle`.
    pub key: String,
    /// The known key closest to it, if one is close.
    pub closest: Option<String>,
}

impl fmt::Display for UnknownKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown setting `{}` ignored", self.key)?;
        if let Some(closest) = &self.closest {
            write!(f, " (did you mean `{closest}`?)")?;
        }
        Ok(())
    }
}

/// Settings built from their layers, and the keys they set that no setting has.
#[derive(Debug, Clone)]
pub struct Layered<T> {
    /// The settings.
    pub settings: T,
    /// Keys that were set but are not settings; worth a warning each.
    pub unknown: Vec<UnknownKey>,
}

/// Builds settings of type `T` from every layer. `centre` is the config-centre document (YAML or
/// JSON, as stored in etcd), placed between the file and the environment.
pub fn layered<T: DeserializeOwned + Serialize + Default>(
    file: Option<&Path>,
    centre: Option<&str>,
) -> Result<T, SettingsError> {
    layered_with_env(file, centre, None)
}

/// Like [`layered`], and also reports the keys that no setting of `T` has (its known keys are those
/// of `T::default()` serialized).
pub fn layered_checked<T: DeserializeOwned + Serialize + Default>(
    file: Option<&Path>,
    centre: Option<&str>,
    env: Option<config::Map<String, String>>,
) -> Result<Layered<T>, SettingsError> {
    let (config, kept_text) = build(file, centre, env, &number_keys(&T::default()))?;
    // A key of another service's settings is not a typo: one environment often serves them all.
    let mut known = known_keys(&T::default());
    known.extend(super::services::every_service_key());
    let mut unknown = Vec::new();
    if let Ok(table) = config
        .clone()
        .try_deserialize::<config::Map<String, Value>>()
    {
        for key in leaf_keys(&table) {
            let top = key.split('.').next().unwrap_or_default();
            let open = known
                .iter()
                .any(|k| k.ends_with(".*") && key.starts_with(&k[..k.len() - 1]));
            if known.contains(&key) || open || NOT_SETTINGS.contains(&top) {
                continue;
            }
            unknown.push(UnknownKey {
                closest: closest(&key, &known),
                key,
            });
        }
    }
    unknown.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(Layered {
        settings: deserialize(config, &kept_text)?,
        unknown,
    })
}

/// Like [`layered`], with the environment given explicitly (tests use this instead of the
/// process environment).
pub fn layered_with_env<T: DeserializeOwned + Serialize + Default>(
    file: Option<&Path>,
    centre: Option<&str>,
    env: Option<config::Map<String, String>>,
) -> Result<T, SettingsError> {
    let (config, kept_text) = build(file, centre, env, &number_keys(&T::default()))?;
    deserialize(config, &kept_text)
}

fn deserialize<T: DeserializeOwned>(
    config: Config,
    kept_text: &[(String, String)],
) -> Result<T, SettingsError> {
    // Services embed `CommonSettings` with `#[serde(flatten)]`, which hides the key of a bad value
    // from the config crate; deserializing the shared part on its own first names the key.
    config.clone().try_deserialize::<CommonSettings>()?;
    config.try_deserialize().map_err(|error| {
        // A value kept as text (see `build`) that a number setting refuses: the error names the
        // value but, through `flatten`, not the key; the variable that set it is named here.
        let message = error.to_string();
        let culprits: Vec<&str> = kept_text
            .iter()
            .filter(|(_, value)| message.contains(&format!("{value:?}")))
            .map(|(name, _)| name.as_str())
            .collect();
        if culprits.is_empty() {
            SettingsError::Invalid(error)
        } else {
            SettingsError::Invalid(config::ConfigError::Message(format!(
                "{message} (from {}: write a number setting as a plain number)",
                culprits.join(", ")
            )))
        }
    })
}

/// Every settings key of `value`, dotted (`store.mongodb.uri`); an empty map below a key (a
/// setting whose keys are free, like a table of weights) is `key.*`.
pub(crate) fn known_keys<T: Serialize>(value: &T) -> Vec<String> {
    fn walk(prefix: &str, value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) if map.is_empty() && !prefix.is_empty() => {
                out.push(format!("{prefix}.*"));
            }
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    let path = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    walk(&path, value, out);
                }
            }
            _ => out.push(prefix.to_owned()),
        }
    }
    let mut out = Vec::new();
    if let Ok(json) = serde_json::to_value(value) {
        walk("", &json, &mut out);
    }
    out
}

/// The keys of `value`'s number settings, dotted (`telemetry.sampling_ratio`): what an environment
/// variable setting one of them means is a number, however it is written.
fn number_keys<T: Serialize>(value: &T) -> HashSet<String> {
    fn walk(prefix: &str, value: &serde_json::Value, out: &mut HashSet<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    walk(&format!("{prefix}{key}."), value, out);
                }
            }
            serde_json::Value::Number(_) => {
                out.insert(prefix.trim_end_matches('.').to_owned());
            }
            _ => {}
        }
    }
    let mut out = HashSet::new();
    if let Ok(json) = serde_json::to_value(value) {
        walk("", &json, &mut out);
    }
    out
}

/// Every key with a value (not a table) in what the layers set, dotted.
fn leaf_keys(table: &config::Map<String, Value>) -> Vec<String> {
    fn walk(prefix: &str, table: &config::Map<String, Value>, out: &mut Vec<String>) {
        for (key, value) in table {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            match &value.kind {
                ValueKind::Table(inner) => walk(&path, inner, out),
                _ => out.push(path),
            }
        }
    }
    let mut out = Vec::new();
    walk("", table, &mut out);
    out
}

/// The known key closest to `key` by edit distance, if it is close enough to be a typo.
fn closest(key: &str, known: &[String]) -> Option<String> {
    known
        .iter()
        .map(|k| (edit_distance(key, k), k))
        .filter(|(distance, k)| *distance <= (k.len() / 3).max(2))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, k)| k.clone())
}

/// Levenshtein distance over bytes (keys are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != cb);
            current.push(substitute.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// Serializes a secret as `<redacted>`: settings are serialized only to learn their keys, and a
/// secret's value must never leave it.
pub(crate) fn redacted<S: serde::Serializer>(
    _: &secrecy::SecretString,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str("<redacted>")
}

/// Accepts a string, or a number as its decimal text: environment variables that look like numbers
/// arrive as numbers (`SHIPPY_STORE__MONGODB__WRITE_CONCERN=1`).
pub(crate) fn string_or_number<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<String, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Text {
        String(String),
        Unsigned(u64),
        Signed(i64),
    }
    Ok(match Text::deserialize(deserializer)? {
        Text::String(text) => text,
        Text::Unsigned(n) => n.to_string(),
        Text::Signed(n) => n.to_string(),
    })
}

/// The layers, built; and the environment's values kept as text (name, value), for errors.
fn build(
    file: Option<&Path>,
    centre: Option<&str>,
    env: Option<config::Map<String, String>>,
    numbers: &HashSet<String>,
) -> Result<(Config, Vec<(String, String)>), SettingsError> {
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
    // Values are typed (`true`, `8080`) so that numbers and switches reach their settings, except
    // where typing would change the text of a setting that is not a number: `1.10` would become
    // 1.1 and `007` 7, so a version or a database name given that way would silently be another.
    // Those stay text. A number setting takes them as the numbers they are (`1.0`, `0.10`); one
    // the settings type cannot name (an optional number with no default) is refused, naming the
    // variable, rather than misread.
    let vars = env.unwrap_or_else(|| {
        std::env::vars_os()
            .filter_map(|(key, value)| Some((key.into_string().ok()?, value.into_string().ok()?)))
            .collect()
    });
    let prefix = format!("{ENV_PREFIX}_");
    let (text, typed): (config::Map<_, _>, config::Map<_, _>) =
        vars.into_iter().partition(|(name, value)| {
            typing_changes(value) && !numbers.contains(&setting_key(name, &prefix))
        });
    let environment = |vars, typed| {
        let mut environment = Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("_")
            .separator("__")
            .try_parsing(typed)
            .list_separator(",");
        for key in LIST_KEYS {
            environment = environment.with_list_parse_key(key);
        }
        environment.source(Some(vars))
    };
    let kept_text = text
        .iter()
        .filter(|(name, _)| name.to_ascii_uppercase().starts_with(&prefix))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    let config = builder
        .add_source(environment(typed, true))
        .add_source(environment(text, false))
        .build()?;
    Ok((config, kept_text))
}

/// The dotted settings key an environment variable sets (`SHIPPY_TELEMETRY__SAMPLING_RATIO` is
/// `telemetry.sampling_ratio`), as the environment source reads it; `prefix` is `SHIPPY_`.
fn setting_key(name: &str, prefix: &str) -> String {
    let name = name.to_ascii_lowercase();
    name.strip_prefix(&prefix.to_ascii_lowercase())
        .unwrap_or_default()
        .replace("__", ".")
}

/// Whether reading `text` as a number, as typed environment values are read, would change it
/// (`1.10` is 1.1, `007` is 7, `1e3` is 1000).
fn typing_changes(text: &str) -> bool {
    if text.to_lowercase().parse::<bool>().is_ok() {
        false
    } else if let Ok(number) = text.parse::<i64>() {
        number.to_string() != text
    } else if let Ok(number) = text.parse::<f64>() {
        number.to_string() != text
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RegistryBackend;
    use std::io::Write;

    #[derive(Debug, Default, Deserialize, Serialize)]
    #[serde(default)]
    struct Svc {
        #[serde(flatten)]
        common: CommonSettings,
        extra: Extra,
    }

    #[derive(Debug, Default, Deserialize, Serialize)]
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
    fn environment_values_keep_their_text_where_a_number_would_change_it() {
        #[derive(Debug, Default, Deserialize, Serialize)]
        #[serde(default)]
        struct Texts {
            #[serde(flatten)]
            common: CommonSettings,
            names: Names,
        }
        #[derive(Debug, Default, Deserialize, Serialize)]
        #[serde(default)]
        struct Names {
            database: String,
            secret: String,
        }
        let s: Texts = layered_with_env(
            None,
            None,
            env(&[
                ("SHIPPY_SERVER__VERSION", "1.10"),
                ("SHIPPY_SERVER__PORT", "7000"),
                ("SHIPPY_NAMES__DATABASE", "007"),
                ("SHIPPY_NAMES__SECRET", "123456789012345678901234567890"),
                ("SHIPPY_REGISTRY__TTL_SECS", "5"),
            ]),
        )
        .expect("layers load");
        assert_eq!(s.common.server.version.as_deref(), Some("1.10"));
        assert_eq!(s.common.server.port, 7000);
        assert_eq!(s.common.registry.ttl_secs, 5);
        assert_eq!(s.names.database, "007");
        assert_eq!(s.names.secret, "123456789012345678901234567890");
        // A number setting takes the number, however it is written (`1.0` once stopped every
        // container of docker-compose.yml, whose sampling ratio is written so).
        let s: Svc = layered_with_env(
            None,
            None,
            env(&[
                ("SHIPPY_TELEMETRY__SAMPLING_RATIO", "1.0"),
                ("SHIPPY_SERVER__PORT", "07000"),
            ]),
        )
        .expect("numbers");
        assert!((s.common.telemetry.sampling_ratio - 1.0).abs() < f64::EPSILON);
        assert_eq!(s.common.server.port, 7000);
        let s: Svc = layered_with_env(
            None,
            None,
            env(&[("SHIPPY_TELEMETRY__SAMPLING_RATIO", "0.10")]),
        )
        .expect("a ratio");
        assert!((s.common.telemetry.sampling_ratio - 0.1).abs() < f64::EPSILON);
        assert!(typing_changes("1e3") && !typing_changes("true") && !typing_changes("-5"));
        assert_eq!(
            setting_key("SHIPPY_TELEMETRY__SAMPLING_RATIO", "SHIPPY_"),
            "telemetry.sampling_ratio"
        );
    }

    #[test]
    fn wrong_type_names_the_key() {
        let err = layered_with_env::<Svc>(None, Some("server:\n  port: lots\n"), env(&[]))
            .expect_err("port must be a number");
        assert!(err.to_string().contains("port"), "{err}");
    }

    #[test]
    fn a_file_that_does_not_parse_is_reported_without_its_text() {
        for (suffix, text) in [
            (
                ".toml",
                "[store]\nuri = mongodb://shippy:hunter2@db:27017\n",
            ),
            (
                ".yaml",
                "store:\n  uri: \"mongodb://shippy:hunter2@db\n  backend: [\n",
            ),
            (
                ".json",
                "{\"store\": {\"uri\": \"mongodb://shippy:hunter2@db\" \"x\"}}",
            ),
        ] {
            let mut file = tempfile::Builder::new()
                .suffix(suffix)
                .tempfile()
                .expect("temp file");
            write!(file, "{text}").expect("write");
            let err = layered_with_env::<Svc>(Some(file.path()), None, env(&[]))
                .expect_err("does not parse")
                .to_string();
            assert!(!err.contains("hunter2"), "{suffix}: {err}");
            assert!(err.contains("line"), "{suffix}: where: {err}");
            let name = file
                .path()
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            assert!(err.contains(&name), "{suffix}: which file: {err}");
        }
    }

    #[test]
    fn missing_file_is_reported() {
        let err = layered_with_env::<Svc>(Some(Path::new("/nope/shippy.yaml")), None, env(&[]))
            .expect_err("missing file");
        assert!(err.to_string().contains("/nope/shippy.yaml"), "{err}");
    }

    #[test]
    fn unknown_keys_are_reported_with_the_closest_known_one() {
        let layered = layered_checked::<Svc>(
            None,
            Some("log:\n  levle: debug\nextra:\n  flag: true\n"),
            env(&[
                ("SHIPPY_REGISTRY__TTL_SEC", "5"),
                ("SHIPPY_TOKEN_FILE", "/tmp/t"),
                ("SHIPPY_CLIENT__TIMEOUT_MS", "10"),
            ]),
        )
        .expect("loads");
        let unknown: Vec<String> = layered.unknown.iter().map(ToString::to_string).collect();
        assert_eq!(
            unknown,
            [
                "unknown setting `log.levle` ignored (did you mean `log.level`?)",
                "unknown setting `registry.ttl_sec` ignored (did you mean `registry.ttl_secs`?)",
            ]
        );
        assert!(layered.settings.extra.flag);
        assert_eq!(layered.settings.common.client.timeout_ms, 10);
    }

    #[test]
    fn write_concern_may_be_a_number() {
        let s: Svc = layered_with_env(
            None,
            None,
            env(&[("SHIPPY_STORE__MONGODB__WRITE_CONCERN", "1")]),
        )
        .expect("a number of nodes is a valid write concern");
        assert_eq!(s.common.store.mongodb.write_concern, "1");
    }
}
