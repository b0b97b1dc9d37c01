//! Building settings from their layers, lowest first: the defaults in the structs, an optional file
//! (`--config`, YAML/JSON/TOML), the etcd config centre's document (when enabled), then `SHIPPY_`
//! environment variables with `__` between levels (`SHIPPY_REGISTRY__BACKEND=etcd`). Lists in env
//! vars are comma-separated.

use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat};
use serde::de::DeserializeOwned;

use super::CommonSettings;

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
    use crate::config::RegistryBackend;
    use serde::Deserialize;
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
