//! Client side of `grpc.health.v1`: used by `healthcheck` subcommands (container probes without a
//! shell), the CLI's `status`, and tests waiting for readiness.

use std::time::Duration;

use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// Asks the server at `address` (`host:port`) for the status of `service` (`""` for the whole server).
pub async fn check(
    address: &str,
    service: &str,
    timeout: Duration,
) -> Result<ServingStatus, String> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| format!("invalid address {address:?}: {e}"))?
        .connect_timeout(timeout)
        .timeout(timeout);
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {address}: {e}"))?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .map_err(|status| format!("health check of {address} failed: {}", status.message()))?;
    Ok(response.into_inner().status())
}

/// Polls until `service` at `address` reports SERVING or `within` passes.
pub async fn wait_serving(address: &str, service: &str, within: Duration) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let last = match check(address, service, Duration::from_millis(500)).await {
            Ok(ServingStatus::Serving) => return Ok(()),
            Ok(status) => format!("status {}", status.as_str_name()),
            Err(error) => error,
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("{address} not serving after {within:?}: {last}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
