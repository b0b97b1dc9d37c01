//! Every `SHIPPY_*` setting the deployment files give the services (docker-compose, the Kubernetes
//! manifests) is one the services accept. `SHIPPY_TELEMETRY__SAMPLING_RATIO: 1.0` in
//! docker-compose.yml once stopped every container at start; only a run of the containers showed
//! it, and this test shows it in a second.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use shippy_shared::config::{
    ServiceSettings, SettingsError,
    gateway::GatewaySettings,
    layered_with_env,
    services::{ConsignmentSettings, UserSettings, VesselSettings},
};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The deployment files that set `SHIPPY_*` variables.
fn deploy_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir)
            .expect("read the deploy directory")
            .flatten()
        {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "yml" || e == "yaml") {
                out.push(path);
            }
        }
    }
    let mut files = vec![repo().join("docker-compose.yml")];
    walk(&repo().join("deploy"), &mut files);
    files.sort();
    files
}

/// A value as the service would get it: compose's `${NAME:-default}` and `${NAME-default}` as
/// their defaults, a required `${NAME:?…}` as a secret long enough, quotes removed.
fn resolved(value: &str) -> String {
    let value = value.trim().trim_matches('"').trim_matches('\'');
    let Some(inner) = value
        .strip_prefix("${")
        .and_then(|rest| rest.strip_suffix('}'))
    else {
        return value.to_owned();
    };
    if inner.contains(":?") {
        return "a-secret-of-forty-characters-for-the-test".to_owned();
    }
    inner
        .split_once(":-")
        .or_else(|| inner.split_once('-'))
        .map(|(_, default)| default.to_owned())
        .unwrap_or_default()
}

/// The settings variables (`SHIPPY_A__B`) `text` sets: `NAME: value` (compose), `- NAME=value`
/// (kustomize literals) and `- name: NAME` followed by `value: …` (Kubernetes containers).
fn settings_variables(text: &str) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    let mut named: Option<String> = None;
    for line in text.lines() {
        let line = line.split(" #").next().unwrap_or_default().trim();
        if let Some(name) = named.take()
            && let Some(value) = line.strip_prefix("value:")
        {
            found.insert(name, resolved(value));
            continue;
        }
        if let Some(name) = line.strip_prefix("- name:") {
            named = Some(name.trim().to_owned());
            continue;
        }
        let line = line.trim_start_matches("- ");
        let Some(split) = line.find([':', '=']) else {
            continue;
        };
        let (name, value) = (line[..split].trim(), &line[split + 1..]);
        found.insert(name.to_owned(), resolved(value));
    }
    found.retain(|name, _| {
        name.starts_with("SHIPPY_")
            && name.contains("__")
            && name
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    });
    found
}

fn accepted<S: ServiceSettings>(env: &BTreeMap<String, String>) -> Result<S, SettingsError> {
    layered_with_env(None, None, Some(env.clone().into_iter().collect()))
}

#[test]
fn every_setting_the_deployment_files_give_is_accepted_by_every_service() {
    let mut checked = 0;
    for file in deploy_files() {
        let text = std::fs::read_to_string(&file).expect("read");
        let env = settings_variables(&text);
        if env.is_empty() {
            continue;
        }
        let name = file
            .strip_prefix(repo())
            .unwrap_or(&file)
            .display()
            .to_string();
        for (service, outcome) in [
            (
                "consignment",
                accepted::<ConsignmentSettings>(&env).map(drop),
            ),
            ("vessel", accepted::<VesselSettings>(&env).map(drop)),
            ("user", accepted::<UserSettings>(&env).map(drop)),
            ("gateway", accepted::<GatewaySettings>(&env).map(drop)),
        ] {
            if let Err(error) = outcome {
                panic!("{name}: the {service} service refuses its settings: {error}\n{env:?}");
            }
        }
        checked += env.len();
    }
    // docker-compose.yml alone sets more than ten; finding none would mean the reading broke.
    assert!(checked > 20, "only {checked} settings found");
}

#[test]
fn the_variables_are_read_as_the_services_get_them() {
    let text = r#"
x-env: &env
  SHIPPY_TELEMETRY__SAMPLING_RATIO: ${SHIPPY_TRACE_SAMPLING_RATIO:-1.0}
  SHIPPY_TELEMETRY__OTLP_ENDPOINT: ${SHIPPY_OTLP_ENDPOINT-http://jaeger:4317}
  SHIPPY_SERVER__PORT: "50051"   # a comment
  SHIPPY_AUTH__JWT_SECRET: ${SHIPPY_JWT_SECRET:?set it}
  SHIPPY_TOKEN: ${SHIPPY_TOKEN:-}
      - SHIPPY_LOG__LEVEL=debug
            - name: SHIPPY_ADMIN__PORT
              value: "9464"
"#;
    let env = settings_variables(text);
    assert_eq!(env["SHIPPY_TELEMETRY__SAMPLING_RATIO"], "1.0");
    assert_eq!(env["SHIPPY_TELEMETRY__OTLP_ENDPOINT"], "http://jaeger:4317");
    assert_eq!(env["SHIPPY_SERVER__PORT"], "50051");
    assert_eq!(env["SHIPPY_LOG__LEVEL"], "debug");
    assert_eq!(env["SHIPPY_ADMIN__PORT"], "9464");
    assert!(env["SHIPPY_AUTH__JWT_SECRET"].len() >= 32);
    assert!(!env.contains_key("SHIPPY_TOKEN"), "not a setting");
}
