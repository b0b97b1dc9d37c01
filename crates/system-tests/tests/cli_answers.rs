//! Clear answers from the real `shippy` CLI (issue 8): every bad input or broken environment gets one
//! sentence on stderr and a non-zero exit, never a panic or a dump of internals; text from services
//! cannot drive the terminal; a closed output pipe ends the CLI quietly.

use std::{
    fs,
    process::{Output, Stdio},
};

use shippy_shared::discovery::ServiceInstance;
use shippy_test_support::{Cluster, consignment_json, etcd::Etcd};

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A failure with exit status 1 and one line on stderr saying `expected` (a service may append a
/// request id to its answer).
fn assert_fails_with(output: &Output, expected: &str) {
    let text = stderr(output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert_eq!(text.lines().count(), 1, "one sentence: {text}");
    assert!(
        text.starts_with(&format!("error: {expected}")),
        "expected `error: {expected}`, got: {text}"
    );
}

/// A failure with exit status 1 and one line on stderr containing each of `parts`, free of panics
/// and of transport internals.
fn assert_fails_saying(output: &Output, parts: &[&str]) {
    let text = stderr(output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert_eq!(text.lines().count(), 1, "one sentence: {text}");
    for part in parts {
        assert!(text.contains(part), "{part:?} missing in: {text}");
    }
    for internal in ["panicked", "tonic::", "ConnectError", "Os {", "source:"] {
        assert!(!text.contains(internal), "{internal:?} in: {text}");
    }
}

/// Nothing that could act on a terminal: no control character but the newlines between lines.
fn assert_no_controls(text: &str) {
    let found: Vec<char> = text
        .chars()
        .filter(|c| c.is_control() && *c != '\n')
        .collect();
    assert!(
        found.is_empty(),
        "raw control characters {found:?} in:\n{text}"
    );
}

#[test]
fn version_names_the_cli() {
    let cluster = Cluster::local().expect("cluster");
    assert_eq!(
        cluster.cli_ok(["--version"]),
        format!("shippy {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn closed_stdout_ends_quietly_with_141() {
    let cluster = Cluster::local().expect("cluster");
    for args in [
        &["status"][..],
        &["--output", "json", "status"],
        &["logout"],
    ] {
        let output = cluster.cli_with_closed_stdout(args);
        assert_eq!(
            (output.status.code(), stderr(&output).as_str()),
            (Some(141), ""),
            "shippy {args:?}"
        );
    }
}

#[test]
fn endless_input_is_capped() {
    let cluster = Cluster::local().expect("cluster");
    let output = cluster.cli(["consignment", "create", "/dev/zero"]);
    assert_fails_with(
        &output,
        "/dev/zero is larger than 8 MiB, the most shippy reads from one input",
    );
    let zero = fs::File::open("/dev/zero").expect("/dev/zero");
    let output = cluster.cli_io(
        ["consignment", "create", "-"],
        Stdio::from(zero),
        Stdio::piped(),
    );
    assert_fails_with(
        &output,
        "stdin is larger than 8 MiB, the most shippy reads from one input",
    );
    let zero = fs::File::open("/dev/zero").expect("/dev/zero");
    let output = cluster.cli_io(
        ["config", "set", "user", "-"],
        Stdio::from(zero),
        Stdio::piped(),
    );
    assert_fails_with(
        &output,
        "stdin is larger than 8 MiB, the most shippy reads from one input",
    );
}

#[test]
fn status_with_nothing_registered_says_so() {
    let cluster = Cluster::local().expect("cluster");
    let place = format!(
        "the local registry at {}",
        cluster.local_registry_dir().display()
    );
    let output = cluster.cli(["status"]);
    assert_eq!(
        (output.status.code(), stdout(&output)),
        (
            Some(0),
            format!("no service instances are registered in {place}\n")
        ),
        "{}",
        stderr(&output)
    );
    assert_eq!(cluster.cli_ok(["--output", "json", "status"]), "[]\n");
    assert_fails_with(
        &cluster.cli(["status", "user"]),
        &format!("no user instances are registered in {place}"),
    );
    assert_fails_with(
        &cluster.cli(["status", "--wait", "1"]),
        &format!("no service instances are registered in {place} after waiting 1 s"),
    );
    assert_fails_with(
        &cluster.cli(["status", "ship"]),
        "unknown service \"ship\": use consignment, vessel, user",
    );
}

#[test]
fn etcd_unreachable_names_the_endpoints() {
    let mut cluster = Cluster::local().expect("cluster");
    // A loopback port that was just free: nothing listens there once the listener is dropped.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    cluster.set_env("SHIPPY_REGISTRY__BACKEND", "etcd");
    cluster.set_env("SHIPPY_ETCD__ENDPOINTS", &endpoint);
    cluster.set_env("SHIPPY_ETCD__REQUEST_TIMEOUT_MS", "2000");
    for args in [&["status"][..], &["config", "get", "user"]] {
        assert_fails_saying(
            &cluster.cli(args),
            &[
                &format!("etcd at {endpoint} is not answering"),
                "SHIPPY_ETCD__ENDPOINTS",
            ],
        );
    }
}

#[tokio::test]
async fn consignment_answers_through_the_cli() {
    let mut cluster = Cluster::local().expect("cluster");
    let _processes = cluster.start_all(1).await.expect("services start");
    cluster.sign_up_and_login("answers@example.com");
    let dir = cluster.dir().to_owned();
    // The example file's containers name `user001`; these leave `user_id` to the server.
    let example = consignment_json(5_000, 3);

    // A file saved with a UTF-8 byte-order mark.
    fs::write(dir.join("bom.json"), format!("\u{feff}{example}")).expect("write");
    let created = cluster.cli_ok(["consignment", "create", "bom.json"]);
    assert!(
        created.contains("Consignment created on vessel"),
        "{created}"
    );

    // The original tutorial's file names a vessel and an id: both are the server's to choose.
    let mut tutorial: serde_json::Value = serde_json::from_str(&example).expect("JSON");
    tutorial["vessel_id"] = "vessel001".into();
    tutorial["id"] = "c42".into();
    fs::write(dir.join("tutorial.json"), tutorial.to_string()).expect("write");
    let output = cluster.cli(["consignment", "create", "tutorial.json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stderr(&output),
        "note: ignoring `id`: the server assigns ids\n\
         note: ignoring `vessel_id`: the server chooses the vessel\n"
    );
    assert!(
        !stdout(&output).contains("vessel001"),
        "{}",
        stdout(&output)
    );
    // Other unknown fields are still refused.
    fs::write(dir.join("typo.json"), r#"{"descripton": "x"}"#).expect("write");
    let output = cluster.cli(["consignment", "create", "typo.json"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("unknown field `descripton`"));

    // Terminal escapes never get stored, so `consignment list` cannot replay them to others.
    let mut hostile: serde_json::Value = serde_json::from_str(&example).expect("JSON");
    hostile["description"] = "\u{1b}]0;pwned\u{7}\u{1b}[2J".into();
    fs::write(dir.join("hostile.json"), hostile.to_string()).expect("write");
    assert_fails_with(
        &cluster.cli(["consignment", "create", "hostile.json"]),
        "rejected: description: must not contain control characters (found U+001B)",
    );
    let output = cluster.cli([
        "vessel",
        "create",
        "--name",
        "\u{1b}[2JBoaty",
        "--capacity",
        "5",
        "--max-weight",
        "100",
    ]);
    assert_fails_saying(&output, &["name: must not contain control characters"]);
    let listed = cluster.cli_ok(["consignment", "list"]);
    assert!(!listed.contains('\u{1b}'), "{listed}");

    // Over the 4 MiB message limit: refused before sending, saying the size and the limit.
    let mut large: serde_json::Value = serde_json::from_str(&example).expect("JSON");
    large["description"] = "x".repeat(5_000_000).into();
    fs::write(dir.join("large.json"), large.to_string()).expect("write");
    assert_fails_with(
        &cluster.cli(["consignment", "create", "large.json"]),
        "the consignment is 4.8 MiB encoded; the limit is 4 MiB (the description alone is 4.8 MiB)",
    );
    // Under it, the service names the field and its limit.
    large["description"] = "x".repeat(3_000_000).into();
    fs::write(dir.join("long.json"), large.to_string()).expect("write");
    assert_fails_with(
        &cluster.cli(["consignment", "create", "long.json"]),
        "rejected: description: longer than 2000 characters",
    );

    // `shippy consignment list | head -1` once head has gone.
    let output = cluster.cli_with_closed_stdout(["consignment", "list"]);
    assert_eq!(
        (output.status.code(), stderr(&output).as_str()),
        (Some(141), "")
    );

    // A named service with a serving instance succeeds.
    let status = cluster.cli_ok(["status", "user"]);
    assert!(status.contains("SERVING"), "{status}");
    assert!(!status.contains("vessel"), "{status}");
}

/// Text that reaches the CLI from elsewhere (a registration, a config document written by another
/// etcd client, an error message) is shown with its control characters escaped, in tables, plain
/// text and JSON.
#[tokio::test]
async fn text_from_elsewhere_cannot_drive_the_terminal() {
    const HOSTILE: &str = "\u{1b}]0;pwned\u{7}\u{1b}[2J\u{9b}2J";
    const SHOWN: &str = "\\u{1b}]0;pwned\\u{7}\\u{1b}[2J\\u{9b}2J";
    let etcd = Etcd::start().await.expect("etcd starts");
    let cluster = Cluster::on_etcd(&etcd, 10).await.expect("cluster");

    // A registration whose version is an escape sequence, as any etcd client could write.
    let instance = ServiceInstance::new("user", HOSTILE, "127.0.0.1:1".into());
    let _registration = cluster
        .registry()
        .register(instance)
        .await
        .expect("register");
    let table = cluster.cli_ok(["status"]);
    assert_no_controls(&table);
    assert!(table.contains(SHOWN), "{table}");
    let json = cluster.cli_ok(["--output", "json", "status"]);
    assert_no_controls(&json);
    let parsed: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(parsed[0]["version"], HOSTILE, "scripts still get the text");

    // A config document put by another etcd client, bypassing `shippy config set`'s checks.
    let prefix = cluster.etcd_prefix().expect("etcd prefix").to_owned();
    let mut client = etcd_client::Client::connect(etcd.endpoint_list(), None)
        .await
        .expect("etcd client");
    client
        .put(
            format!("/{prefix}/config/user"),
            format!("log:\n  level: info # {HOSTILE}\n"),
            None,
        )
        .await
        .expect("put");
    assert_eq!(
        cluster.cli_ok(["config", "get", "user"]),
        format!("log:\n  level: info # {SHOWN}\n")
    );
    let json = cluster.cli_ok(["--output", "json", "config", "get", "user"]);
    assert_no_controls(&json);
    assert!(json.contains("\\u009b2J"), "{json}");

    // An error message quoting a name with an escape in it.
    let output = cluster.cli(["consignment", "create", &format!("{HOSTILE}.json")]);
    assert_fails_with(&output, &format!("{SHOWN}.json: no such file"));
}
