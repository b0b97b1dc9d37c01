//! `GET /v1/instances`: every live instance of every service, from discovery, with how many calls
//! each has served (read from its own `/metrics`, the address it registered) — the console's
//! picture of the system as it runs.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{extract::State, response::IntoResponse};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use shippy_shared::{
    catalog,
    discovery::{DiscoveryError, InstanceSet, Registry},
};
use tokio::sync::watch;

/// How long one instance's metrics may take to arrive.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(1);
/// Largest metrics page read.
const MAX_METRICS_BYTES: usize = 2 * 1024 * 1024;
/// The counters whose sum is "calls served": gRPC calls handled, and the gateway's REST requests.
const SERVED: [&str; 2] = ["grpc_server_handled_total", "shippy_gateway_requests_total"];

/// How long one listing is served before the instances are asked again: every open console asks
/// every few seconds, and the instances' metrics pages are not free.
const FRESH_FOR: Duration = Duration::from_secs(2);

/// Live instance sets of every catalog service.
#[derive(Debug)]
pub struct Instances {
    sets: Vec<(&'static str, watch::Receiver<InstanceSet>)>,
    /// `gateway.instance_addresses`.
    addresses: bool,
    last: tokio::sync::Mutex<Option<(Instant, Bytes)>>,
}

impl Instances {
    /// Subscribes to every service of the catalog; `addresses` says whether listings show them.
    pub async fn watch(
        registry: &dyn Registry,
        addresses: bool,
    ) -> Result<Arc<Self>, DiscoveryError> {
        let mut sets = Vec::new();
        for spec in catalog::ALL {
            sets.push((spec.name, registry.subscribe(spec.name).await?));
        }
        Ok(Arc::new(Self {
            sets,
            addresses,
            last: tokio::sync::Mutex::new(None),
        }))
    }
}

/// The answer of `GET /v1/instances`.
#[derive(Debug, Serialize)]
pub struct Listing {
    services: Vec<ServiceListing>,
}

#[derive(Debug, Serialize)]
struct ServiceListing {
    name: &'static str,
    instances: Vec<InstanceListing>,
}

#[derive(Debug, Serialize)]
struct InstanceListing {
    id: String,
    /// `None` unless `gateway.instance_addresses` is on.
    address: Option<String>,
    version: String,
    /// `None` when the instance's metrics could not be read.
    calls_served: Option<u64>,
}

/// Serves `GET /v1/instances`; concurrent requests share one round of scrapes.
pub async fn list(State(instances): State<Arc<Instances>>) -> impl IntoResponse {
    let mut last = instances.last.lock().await;
    let body = match last.as_ref() {
        Some((at, body)) if at.elapsed() < FRESH_FOR => body.clone(),
        _ => {
            let body =
                Bytes::from(serde_json::to_vec(&gather(&instances).await).unwrap_or_default());
            *last = Some((Instant::now(), body.clone()));
            body
        }
    };
    ([(http::header::CONTENT_TYPE, "application/json")], body)
}

async fn gather(instances: &Instances) -> Listing {
    let mut services = Vec::new();
    for (name, set) in &instances.sets {
        let mut set = set.borrow().clone();
        set.sort_by(|a, b| a.address.cmp(&b.address));
        let counted = futures::future::join_all(set.iter().map(|instance| {
            let metrics = instance.metadata.get("metrics_address").cloned();
            async move {
                match metrics {
                    Some(address) => served(&address).await,
                    None => None,
                }
            }
        }))
        .await;
        let listed: Vec<InstanceListing> = set
            .into_iter()
            .zip(counted)
            .map(|(instance, calls_served)| InstanceListing {
                id: instance.id,
                address: instances.addresses.then_some(instance.address),
                version: instance.version,
                calls_served,
            })
            .collect();
        services.push(ServiceListing {
            name,
            instances: listed,
        });
    }
    Listing { services }
}

/// The calls an instance has served, from its metrics at `address` (`host:port`).
async fn served(address: &str) -> Option<u64> {
    let page = tokio::time::timeout(SCRAPE_TIMEOUT, scrape(address))
        .await
        .ok()??;
    Some(sum(&page, &SERVED))
}

async fn scrape(address: &str) -> Option<String> {
    let stream = tokio::net::TcpStream::connect(address).await.ok()?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(connection);
    let request = http::Request::get("/metrics")
        .header(http::header::HOST, address)
        .body(Empty::<Bytes>::new())
        .ok()?;
    let response = sender.send_request(request).await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    let body = Limited::new(response.into_body(), MAX_METRICS_BYTES)
        .collect()
        .await
        .ok()?
        .to_bytes();
    String::from_utf8(body.to_vec()).ok()
}

/// The sum of every sample of the counters `names` in a Prometheus text page.
fn sum(page: &str, names: &[&str]) -> u64 {
    page.lines()
        .filter(|line| {
            names.iter().any(|name| {
                line.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
            })
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|value| value.max(0.0) as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_served_sum_the_handled_counters_only() {
        let page = "# TYPE grpc_server_handled_total counter\n\
            grpc_server_handled_total{grpc_method=\"A\",grpc_code=\"OK\"} 3\n\
            grpc_server_handled_total{grpc_method=\"B\",grpc_code=\"NotFound\"} 2\n\
            grpc_server_handled_total_extra 100\n\
            grpc_server_started_total{grpc_method=\"A\"} 9\n";
        assert_eq!(sum(page, &SERVED), 5);
    }
}
