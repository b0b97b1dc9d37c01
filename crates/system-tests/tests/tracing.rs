//! Following one request across processes, with the real things: real service processes, the real
//! `shippy` CLI, and a real Jaeger (built from its Go module by `scripts/build-jaeger.sh`) that
//! receives the spans over OTLP and answers through its query API.

use std::{collections::BTreeSet, time::Duration};

use shippy_proto::{
    consignment::v1::{Consignment, Container, shipping_service_client::ShippingServiceClient},
    user::v1::{User, user_service_client::UserServiceClient},
};
use shippy_test_support::{
    Cluster, ServiceProcess, consignment_json, http,
    jaeger::{self, Jaeger},
};
use tonic::{Code, Request};

/// How long spans may take to reach Jaeger (batches leave every 200 ms here).
const EXPORT_WITHIN: Duration = Duration::from_secs(30);

/// The trace id printed by `shippy --trace` on stderr.
fn printed_trace_id(stderr: &str) -> String {
    let id = stderr
        .lines()
        .find_map(|line| line.strip_prefix("trace id: "))
        .unwrap_or_else(|| panic!("no trace id printed: {stderr}"))
        .trim()
        .to_owned();
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id:?}"
    );
    id
}

/// Runs `shippy --trace consignment create` (after signing up and logging in) and returns the
/// trace id it printed.
fn traced_create(cluster: &Cluster) -> String {
    cluster.sign_up_and_login("tracer@example.com");
    let file = cluster.dir().join("consignment.json");
    std::fs::write(&file, consignment_json(500, 2)).expect("consignment file");
    let output = cluster.cli([
        "--trace",
        "consignment",
        "create",
        file.to_str().expect("utf-8 path"),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "{stderr}\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
    printed_trace_id(&stderr)
}

fn server_span<'a>(spans: &'a [jaeger::Span], service: &str, rpc: &str) -> &'a jaeger::Span {
    spans
        .iter()
        .find(|s| {
            s.service == service
                && s.operation == rpc
                && s.tags.get("span.kind").map(String::as_str) == Some("server")
        })
        .unwrap_or_else(|| panic!("no {rpc} server span of {service} in {spans:#?}"))
}

#[tokio::test]
async fn one_cli_call_is_one_trace_across_cli_consignment_user_and_vessel() {
    let jaeger = Jaeger::start().expect("Jaeger starts");
    let mut cluster = Cluster::local().expect("cluster");
    cluster.set_env("SHIPPY_TELEMETRY__OTLP_ENDPOINT", &jaeger.otlp_endpoint());
    cluster.set_env("OTEL_BSP_SCHEDULE_DELAY", "200");
    let _processes = cluster.start_all(1).await.expect("services start");

    let trace_id = traced_create(&cluster);
    let wanted = [
        (
            "consignment",
            "shippy.consignment.v1.ShippingService/CreateConsignment",
        ),
        // The consignment service's first authenticated call fetches the user service's public
        // keys (later calls verify with its copy, so no user hop): this is that first call.
        ("user", "shippy.user.v1.UserService/PublicKeys"),
        ("vessel", "shippy.vessel.v1.VesselService/FindAvailable"),
    ];
    let trace = jaeger
        .wait_for_trace(&trace_id, EXPORT_WITHIN, |trace| {
            let spans = jaeger::spans(trace);
            spans
                .iter()
                .any(|s| s.operation == "shippy consignment create")
                && wanted.iter().all(|(service, rpc)| {
                    spans
                        .iter()
                        .any(|s| s.service == *service && s.operation == *rpc)
                })
        })
        .expect("the whole trace reaches Jaeger");
    let spans = jaeger::spans(&trace);

    let root = spans
        .iter()
        .find(|s| s.operation == "shippy consignment create")
        .expect("the CLI's span");
    assert_eq!(root.service, "shippy");
    assert_eq!(root.parent, None, "the CLI starts the trace");
    let consignment = server_span(&spans, wanted[0].0, wanted[0].1);
    let user = server_span(&spans, wanted[1].0, wanted[1].1);
    let vessel = server_span(&spans, wanted[2].0, wanted[2].1);
    assert!(jaeger::descends(&spans, consignment, root), "{spans:#?}");
    assert!(jaeger::descends(&spans, user, consignment), "{spans:#?}");
    assert!(jaeger::descends(&spans, vessel, consignment), "{spans:#?}");

    // The CLI's client span and its attempt sit between its root and the consignment service.
    let client = spans
        .iter()
        .find(|s| s.service == "shippy" && s.operation == wanted[0].1)
        .expect("the CLI's client span");
    assert_eq!(client.parent.as_deref(), Some(root.id.as_str()));
    assert!(jaeger::descends(&spans, consignment, client));

    // RPC semantic conventions on every server span.
    for (span, (_, rpc)) in [consignment, user, vessel].into_iter().zip(wanted) {
        let (service, method) = rpc.split_once('/').expect("service/method");
        assert_eq!(span.tags["rpc.system"], "grpc", "{span:#?}");
        assert_eq!(span.tags["rpc.service"], service, "{span:#?}");
        assert_eq!(span.tags["rpc.method"], method, "{span:#?}");
        assert_eq!(span.tags["rpc.grpc.status_code"], "0", "{span:#?}");
        assert!(span.tags.contains_key("server.address"), "{span:#?}");
    }
    // No span carries the source location or module of the shared code that opened it: the same
    // few lines for every call of every service, which would say nothing about the call.
    for span in &spans {
        for noise in [
            "code.file.path",
            "code.module.name",
            "code.line.number",
            "target",
        ] {
            assert!(!span.tags.contains_key(noise), "{noise} on {span:#?}");
        }
    }

    // One request id, made by the CLI, on the CLI's call and on every server span.
    let ids: BTreeSet<&str> = [client, consignment, user, vessel]
        .iter()
        .map(|span| {
            span.tags
                .get("request_id")
                .map(String::as_str)
                .unwrap_or_else(|| panic!("no request_id on {span:#?}"))
        })
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
}

/// The request id [`create_with_traceparent`] sends.
const REQUEST_ID: &str = "req-traced-by-hand";

/// A `CreateConsignment` with `token`, sent straight to `process` with the
/// W3C `traceparent` header `traceparent`.
async fn create_with_traceparent(process: &ServiceProcess, token: &str, traceparent: &str) {
    let mut client = ShippingServiceClient::connect(format!("http://{}", process.address()))
        .await
        .expect("connect");
    let mut request = Request::new(Consignment {
        description: "traced cargo".into(),
        weight: 500,
        containers: vec![Container {
            customer_id: "c1".into(),
            origin: "Felixstowe".into(),
            ..Default::default()
        }],
        ..Default::default()
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", token.trim()).parse().expect("header"),
    );
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().expect("header"));
    request
        .metadata_mut()
        .insert("x-request-id", REQUEST_ID.parse().expect("header"));
    client.create_consignment(request).await.expect("created");
}

/// Most calls are not sampled, so the spans opened while serving one (client, attempt, store) are
/// not built at all; the not-sampled flag still travels, so the next hop records nothing either.
/// Every service here samples every trace it starts itself: a vessel that lost the flag would
/// start a trace of its own, and Jaeger would hold it. A sampled call keeps every span.
#[tokio::test]
async fn an_unsampled_call_leaves_no_span_anywhere_and_a_sampled_one_keeps_them_all() {
    let jaeger = Jaeger::start().expect("Jaeger starts");
    let mut cluster = Cluster::local().expect("cluster");
    cluster.set_env("SHIPPY_TELEMETRY__OTLP_ENDPOINT", &jaeger.otlp_endpoint());
    cluster.set_env("SHIPPY_TELEMETRY__SAMPLING_RATIO", "1");
    cluster.set_env("OTEL_BSP_SCHEDULE_DELAY", "200");
    let processes = cluster.start_all(1).await.expect("services start");
    let consignment = ServiceProcess::of(&processes, "consignment");
    let token = cluster.sign_up_and_login("sampling@example.com");

    let unsampled = "4bf92f3577b34da6a3ce929d0e0e4736";
    let sampled = "5cf92f3577b34da6a3ce929d0e0e4737";
    create_with_traceparent(
        consignment,
        &token,
        &format!("00-{unsampled}-00f067aa0ba902b7-00"),
    )
    .await;
    create_with_traceparent(
        consignment,
        &token,
        &format!("00-{sampled}-00f067aa0ba902b7-01"),
    )
    .await;

    let find = "shippy.vessel.v1.VesselService/FindAvailable";
    let trace = jaeger
        .wait_for_trace(sampled, EXPORT_WITHIN, |trace| {
            let spans = jaeger::spans(trace);
            spans
                .iter()
                .any(|s| s.service == "vessel" && s.operation == find)
                && spans
                    .iter()
                    .any(|s| s.service == "consignment" && s.tags.contains_key("db.operation.name"))
        })
        .expect("the sampled call's trace reaches Jaeger");
    let spans = jaeger::spans(&trace);
    let server = server_span(
        &spans,
        "consignment",
        "shippy.consignment.v1.ShippingService/CreateConsignment",
    );
    let client = spans
        .iter()
        .find(|s| s.service == "consignment" && s.operation == find)
        .expect("the balancer's client span");
    let attempt = spans
        .iter()
        .find(|s| s.service == "consignment" && s.operation == format!("{find} attempt 1"))
        .expect("the balancer's attempt span");
    let vessel = server_span(&spans, "vessel", find);
    assert!(jaeger::descends(&spans, client, server), "{spans:#?}");
    assert!(jaeger::descends(&spans, attempt, client), "{spans:#?}");
    assert!(jaeger::descends(&spans, vessel, attempt), "{spans:#?}");

    // Spans leave each process in the order they end: the unsampled call's would have gone first.
    assert_eq!(jaeger.trace(unsampled).expect("query"), None);
    let vessel_calls: Vec<String> = jaeger
        .trace_ids_of("vessel")
        .expect("query")
        .into_iter()
        .filter(|id| {
            jaeger.trace(id).expect("query").is_some_and(|trace| {
                jaeger::spans(&trace)
                    .iter()
                    .any(|s| s.service == "vessel" && s.operation == find)
            })
        })
        .collect();
    assert_eq!(
        vessel_calls,
        [sampled],
        "the vessel recorded a trace of its own for the unsampled call"
    );
}

/// When a call's trace is not sampled and the log level leaves out spans, no span of the call is
/// built at all; its log lines still carry the caller's trace id and request id.
#[tokio::test]
async fn log_lines_of_an_unsampled_call_without_spans_still_carry_its_ids() {
    let mut cluster = Cluster::local().expect("cluster");
    cluster.set_env("SHIPPY_LOG__FORMAT", "json");
    // The handlers' own lines, but no spans (they are at info, in shippy_shared).
    cluster.set_env(
        "SHIPPY_LOG__LEVEL",
        "warn,shippy_vessel=info,shippy_consignment=info",
    );
    let processes = cluster.start_all(1).await.expect("services start");
    let consignment = ServiceProcess::of(&processes, "consignment");
    let vessel = ServiceProcess::of(&processes, "vessel");
    let token = cluster.sign_up_and_login("logs@example.com");

    let trace_id = "6df92f3577b34da6a3ce929d0e0e4738";
    create_with_traceparent(
        consignment,
        &token,
        &format!("00-{trace_id}-00f067aa0ba902b7-00"),
    )
    .await;
    for (process, message) in [
        (consignment, "consignment created"),
        (vessel, "vessel found"),
    ] {
        let lines = lines_of_trace(process, trace_id);
        let line = lines
            .iter()
            .find(|line| line["message"] == message)
            .unwrap_or_else(|| {
                panic!(
                    "no {message:?} line of trace {trace_id}:\n{}",
                    process.log()
                )
            });
        assert!(line.get("span").is_none(), "no span was built: {line}");
        assert_eq!(line["request_id"], REQUEST_ID, "{line}");
        assert!(
            line["span_id"].as_str().is_some_and(|id| id.len() == 16),
            "{line}"
        );
    }
}

/// The JSON log lines of `process` that belong to `trace_id`.
fn lines_of_trace(process: &ServiceProcess, trace_id: &str) -> Vec<serde_json::Value> {
    process
        .log()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["trace_id"] == trace_id)
        .collect()
}

#[tokio::test]
async fn one_requests_log_lines_in_three_services_share_trace_id_and_request_id() {
    let mut cluster = Cluster::local().expect("cluster");
    cluster.set_env("SHIPPY_LOG__FORMAT", "json");
    // The access line of every call ("call served") is at debug level.
    cluster.set_env("SHIPPY_LOG__LEVEL", "info,shippy_shared=debug");
    let processes = cluster.start_all(1).await.expect("services start");

    // No collector: ids are made and logged all the same.
    let trace_id = traced_create(&cluster);
    let mut request_ids = BTreeSet::new();
    for process in &processes {
        let lines = lines_of_trace(process, &trace_id);
        assert!(
            !lines.is_empty(),
            "no line of trace {trace_id} in {}:\n{}",
            process.address(),
            process.log()
        );
        for line in &lines {
            assert!(
                line["span_id"].as_str().is_some_and(|id| id.len() == 16),
                "{line}"
            );
            request_ids.insert(
                line["request_id"]
                    .as_str()
                    .unwrap_or_else(|| panic!("no request_id: {line}"))
                    .to_owned(),
            );
        }
    }
    assert_eq!(request_ids.len(), 1, "{request_ids:?}");
    let consignment = processes.last().expect("consignment");
    assert!(
        lines_of_trace(consignment, &trace_id)
            .iter()
            .any(|line| line["message"] == "consignment created"),
        "the handler's own line carries the ids too"
    );

    // A call nobody asked to trace (and no collector) still gets ids in the logs.
    cluster.cli_ok(["consignment", "list"]);
    let served: Vec<serde_json::Value> = consignment
        .log()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| {
            line["message"] == "call served" && line["span"]["rpc.method"] == "GetConsignments"
        })
        .collect();
    let line = served.last().expect("the list call's access line");
    let untraced = line["trace_id"].as_str().expect("a trace id");
    assert!(
        untraced.len() == 32 && untraced != trace_id && untraced != "0".repeat(32),
        "{line}"
    );
    assert!(line["request_id"].is_string(), "{line}");
}

#[tokio::test]
async fn answers_carry_the_request_id_the_caller_needs_and_the_cli_quotes_it() {
    let mut cluster = Cluster::local().expect("cluster");
    let user = cluster.start("user").await.expect("user starts");

    // A caller's id is kept and returned with an error; the message is the handler's own.
    let mut client = UserServiceClient::connect(format!("http://{}", user.address()))
        .await
        .expect("connect");
    let mut request = Request::new(User {
        email: "nobody@example.com".into(),
        password: "wrong password".into(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("x-request-id", "quote-me-42".parse().expect("value"));
    let status = client.auth(request).await.expect_err("no such user");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(!status.message().contains("request id"), "{status:?}");
    assert_eq!(
        status
            .metadata()
            .get("x-request-id")
            .map(|v| v.to_str().expect("ascii")),
        Some("quote-me-42")
    );

    // A success carries no id, whether its caller sent one (it has it) or not (it did not ask).
    let created = client
        .create(User {
            name: "Ann".into(),
            email: "ann@example.com".into(),
            password: "correct horse".into(),
            ..Default::default()
        })
        .await
        .expect("created");
    assert_eq!(created.metadata().get("x-request-id"), None);
    let mut request = Request::new(User {
        email: "ann@example.com".into(),
        password: "correct horse".into(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("x-request-id", "quote-me-43".parse().expect("value"));
    let token = client.auth(request).await.expect("signed in");
    assert!(!token.get_ref().token.is_empty());
    assert_eq!(token.metadata().get("x-request-id"), None);

    // A caller that sent none and failed learns the id the service made and logged.
    let status = client
        .auth(User {
            email: "ann@example.com".into(),
            password: "not her password".into(),
            ..Default::default()
        })
        .await
        .expect_err("wrong password");
    assert_eq!(status.code(), Code::Unauthenticated);
    let made = status
        .metadata()
        .get("x-request-id")
        .expect("a request id made for the caller")
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_eq!(made.len(), 36, "{made}");
    assert!(user.log().contains(&made), "the service's log has {made}");

    // What a person sees: the CLI's error sentence ends with the id to quote, the one the
    // service logged the failure with.
    let output = cluster.cli([
        "login",
        "--email",
        "ann@example.com",
        "--password",
        "not it at all",
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let quoted = stderr
        .split("(request id: ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("no request id quoted: {stderr}"));
    assert_eq!(quoted.len(), 36, "{stderr}");
    assert!(
        user.log().contains(quoted),
        "the service's log has {quoted}"
    );
}

#[tokio::test]
async fn a_missing_collector_is_a_warning_and_calls_still_succeed() {
    let mut cluster = Cluster::local().expect("cluster");
    // A port nothing listens on.
    let dead = format!("http://127.0.0.1:{}", http::free_port().expect("port"));
    cluster.set_env("SHIPPY_TELEMETRY__OTLP_ENDPOINT", &dead);
    cluster.set_env("OTEL_BSP_SCHEDULE_DELAY", "100");
    let processes = cluster.start_all(1).await.expect("services start");

    // The CLI exports too (to nowhere), and still answers and exits 0.
    traced_create(&cluster);
    for process in &processes {
        let log = process.log();
        assert!(log.contains("no OTLP collector answers"), "{log}");
    }
}
