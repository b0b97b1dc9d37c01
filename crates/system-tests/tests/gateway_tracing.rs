//! A REST call is one trace: the caller's `traceparent` reaches the gateway, whose HTTP server span
//! is the parent of the consignment service's, which is the parent of the vessel's — checked in a
//! real Jaeger that received the spans over OTLP.

use std::time::Duration;

use serde_json::json;
use shippy_test_support::{
    Cluster,
    jaeger::{self, Jaeger},
};

#[tokio::test]
async fn a_rest_call_is_one_trace_from_the_caller_through_the_gateway_to_the_vessel() {
    let jaeger = Jaeger::start().expect("Jaeger starts");
    let mut cluster = Cluster::local().expect("cluster");
    cluster.set_env("SHIPPY_TELEMETRY__OTLP_ENDPOINT", &jaeger.otlp_endpoint());
    cluster.set_env("OTEL_BSP_SCHEDULE_DELAY", "200");
    let _services = cluster.start_all(1).await.expect("services start");
    let gateway = cluster.start("gateway").await.expect("gateway");
    let url = gateway.http_url().expect("HTTP address");
    let token = cluster.sign_up_and_login("rest-tracer@example.com");

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let answer = reqwest::Client::new()
        .post(format!("{url}/v1/consignments"))
        .bearer_auth(token.trim())
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .json(&json!({"description": "traced", "weight": 500, "containers": [{"customer_id": "c", "origin": "o"}]}))
        .send()
        .await
        .expect("create");
    assert!(answer.status().is_success(), "{:?}", answer.text().await);

    let trace = jaeger
        .wait_for_trace(trace_id, Duration::from_secs(30), |trace| {
            let spans = jaeger::spans(trace);
            ["gateway", "consignment", "vessel"]
                .iter()
                .all(|service| spans.iter().any(|s| s.service == *service))
        })
        .expect("the trace reaches Jaeger");
    let spans = jaeger::spans(&trace);
    let find = |service: &str, operation: &str| {
        spans
            .iter()
            .find(|s| s.service == service && s.operation == operation)
            .unwrap_or_else(|| panic!("no {operation} span of {service} in {spans:#?}"))
    };
    let edge = find("gateway", "POST /v1/consignments");
    assert_eq!(
        edge.parent.as_deref(),
        Some(caller_span),
        "the caller's span is the parent"
    );
    let consignment = find(
        "consignment",
        "shippy.consignment.v1.ShippingService/CreateConsignment",
    );
    let vessel = find("vessel", "shippy.vessel.v1.VesselService/FindAvailable");
    assert!(jaeger::descends(&spans, consignment, edge), "{spans:#?}");
    assert!(jaeger::descends(&spans, vessel, consignment), "{spans:#?}");
}
