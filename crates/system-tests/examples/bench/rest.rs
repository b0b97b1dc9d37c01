//! The REST gateway's share: the same `CreateConsignment` load as the gRPC part, sent as JSON over
//! HTTP/1.1 through `shippy-gateway` (which then makes the same gRPC call), so the gateway hop
//! reads as a ratio to the gRPC figures of the same run.

use std::time::{Duration, Instant};

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
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..concurrency {
        let (http, endpoint, token) = (http.clone(), endpoint.clone(), token.to_owned());
        let share = calls / concurrency + usize::from(worker < calls % concurrency);
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(share);
            let mut failures = 0usize;
            for i in 0..share {
                let n = worker * 1_000_000 + i;
                let body = json!({
                    "description": format!("bench cargo {n}"),
                    "weight": 1_000 + (n % 50_000),
                    "containers": [{"customer_id": "bench", "origin": "Felixstowe"}],
                });
                let sent = Instant::now();
                let answered = http
                    .post(&endpoint)
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await;
                match answered {
                    Ok(response) if response.status().is_success() => {
                        // Read the body: the call is over when the answer has arrived.
                        if response.bytes().await.is_err() {
                            failures += 1;
                        }
                    }
                    _ => failures += 1,
                }
                latencies.push(sent.elapsed());
            }
            (latencies, failures)
        }));
    }
    let mut latencies = Vec::with_capacity(calls);
    let mut failures = 0;
    for worker in workers {
        let (mut l, f) = worker.await?;
        latencies.append(&mut l);
        failures += f;
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    Ok(Load {
        elapsed,
        latencies,
        failures,
    })
}
