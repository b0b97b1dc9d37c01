//! The REST gateway's share: the same `CreateConsignment` load as the gRPC part, sent as JSON over
//! HTTP/1.1 through `shippy-gateway` (which then makes the same gRPC call), so the gateway hop
//! reads as a ratio to the gRPC figures of the same run.

use std::time::Duration;

use serde_json::json;

use crate::Load;

/// Sends `calls` `POST /v1/consignments` from `concurrency` workers (each on its own keep-alive
/// connection, waiting for each answer before the next), like [`crate::load`] does over gRPC.
pub(crate) async fn load(
    url: &str,
    token: &str,
    calls: usize,
    concurrency: usize,
) -> anyhow::Result<Load> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .timeout(Duration::from_secs(30))
        .build()?;
    let endpoint = format!("{url}/v1/consignments");
    let token = token.to_owned();
    crate::drive(calls, concurrency, move |n| {
        let (http, endpoint, token) = (http.clone(), endpoint.clone(), token.clone());
        async move {
            let body = json!({
                "description": format!("bench cargo {n}"),
                "weight": 1_000 + (n % 50_000),
                "containers": [{"customer_id": "bench", "origin": "Felixstowe"}],
            });
            match http
                .post(&endpoint)
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await
            {
                // The call is over when the whole answer has arrived.
                Ok(response) if response.status().is_success() => response.bytes().await.is_ok(),
                _ => false,
            }
        }
    })
    .await
}
