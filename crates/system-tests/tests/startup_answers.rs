//! What a person starting a service sees when something is off: one clear sentence and a non-zero
//! exit, a warning for a mistyped setting, the binary's own name in `--version`, and server
//! reflection that lists only what the port serves.

use std::{process::Command, time::Duration};

use shippy_shared::catalog;
use shippy_test_support::{Cluster, binary};
use tokio_stream::StreamExt;
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

/// Runs `shippy-vessel` with `env` (and nothing of the caller's `SHIPPY_*`) until it exits.
fn vessel_with(env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let mut command = Command::new(binary("shippy-vessel"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SHIPPY_") {
            command.env_remove(key);
        }
    }
    command
        .env_remove("RUST_LOG")
        // Keep the default store's file out of the tester's home directory.
        .env("SHIPPY_STORE__BACKEND", "memory")
        .envs(env.iter().copied())
        .args(args)
        .output()
        .expect("shippy-vessel runs")
}

#[test]
fn etcd_unreachable_at_start_is_one_sentence_naming_the_endpoints() {
    let dir = tempfile::tempdir().expect("temp dir");
    let registry = dir.path().join("registry");
    let output = vessel_with(
        &[
            ("SHIPPY_REGISTRY__BACKEND", "etcd"),
            ("SHIPPY_ETCD__ENDPOINTS", "http://127.0.0.1:1"),
            ("SHIPPY_ETCD__REQUEST_TIMEOUT_MS", "500"),
            (
                "SHIPPY_REGISTRY__LOCAL__DIR",
                registry.to_str().expect("utf-8"),
            ),
        ],
        &[],
    );
    assert!(!output.status.success(), "must not start without etcd");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("shippy-vessel: ") && last.contains("etcd at http://127.0.0.1:1"),
        "{stderr}"
    );
    assert!(
        last.contains("is not answering") || last.contains("did not answer"),
        "{last}"
    );
    assert!(last.contains("SHIPPY_ETCD__ENDPOINTS"), "{last}");
    assert!(
        !stderr.contains("tonic::transport") && !stderr.contains("ConnectError"),
        "no debug dump: {stderr}"
    );
}

#[test]
fn version_names_the_binary() {
    let output = vessel_with(&[], &["--version"]);
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("shippy-vessel {}", env!("CARGO_PKG_VERSION"))
    );
}

#[tokio::test]
async fn a_mistyped_setting_is_named_with_the_closest_known_one() {
    let mut cluster = Cluster::local().expect("cluster");
    cluster.set_env("SHIPPY_LOG__LEVLE", "debug");
    cluster.set_env("SHIPPY_CLIENT__TIMEOUT", "100");
    let vessel = cluster.start("vessel").await.expect("vessel starts anyway");
    let log = vessel.log();
    assert!(
        log.contains("unknown setting `log.levle` ignored (did you mean `log.level`?)"),
        "{log}"
    );
    assert!(
        log.contains(
            "unknown setting `client.timeout` ignored (did you mean `client.timeout_ms`?)"
        ),
        "{log}"
    );
    // Another service's setting in a shared environment is not a typo.
    assert!(!log.contains("auth.dev_mode"), "{log}");
}

#[tokio::test]
async fn reflection_lists_only_what_the_port_serves() {
    let mut cluster = Cluster::local().expect("cluster");
    let vessel = cluster.start("vessel").await.expect("vessel starts");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", vessel.address()))
        .expect("address")
        .connect()
        .await
        .expect("connect");
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection answers")
        .into_inner();
    let answer = tokio::time::timeout(Duration::from_secs(10), answers.next())
        .await
        .expect("in time")
        .expect("one answer")
        .expect("no error");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a list: {answer:?}");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert!(
        names.contains(&catalog::VESSEL.grpc_service.to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );
    for other in [catalog::USER, catalog::CONSIGNMENT] {
        assert!(!names.contains(&other.grpc_service.to_owned()), "{names:?}");
    }
}
