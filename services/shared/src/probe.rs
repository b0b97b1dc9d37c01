//! Client side of `grpc.health.v1`: used by `healthcheck` subcommands (container probes without a
//! shell), the CLI's `status`, and tests waiting for readiness.

use std::time::Duration;

use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// Why a health check got no status.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The address is not `host:port`.
    #[error("invalid address {0:?}")]
    Address(String),
    /// Nothing answered at the address.
    #[error("cannot connect to {address}: {source}")]
    Connect {
        /// `host:port`.
        address: String,
        /// Cause.
        #[source]
        source: tonic::transport::Error,
    },
    /// The server answered the check with an error.
    #[error("health check of {address} failed: {message}")]
    Check {
        /// `host:port`.
        address: String,
        /// The server's message.
        message: String,
    },
    /// `wait_serving` gave up.
    #[error("{address} not serving after {within:?}: {last}")]
    NotServing {
        /// `host:port`.
        address: String,
        /// How long it waited.
        within: Duration,
        /// The last status or error seen.
        last: String,
    },
}

/// Asks the server at `address` (`host:port`) for the status of `service` (`""` for the whole server).
pub async fn check(
    address: &str,
    service: &str,
    timeout: Duration,
) -> Result<ServingStatus, ProbeError> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .map_err(|_| ProbeError::Address(address.to_owned()))?
        .connect_timeout(timeout)
        .timeout(timeout);
    let channel = endpoint
        .connect()
        .await
        .map_err(|source| ProbeError::Connect {
            address: address.to_owned(),
            source,
        })?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .map_err(|status| ProbeError::Check {
            address: address.to_owned(),
            message: status.message().to_owned(),
        })?;
    Ok(response.into_inner().status())
}

/// Polls until `service` at `address` reports SERVING or `within` passes.
pub async fn wait_serving(
    address: &str,
    service: &str,
    within: Duration,
) -> Result<(), ProbeError> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let last = match check(address, service, Duration::from_millis(500)).await {
            Ok(ServingStatus::Serving) => return Ok(()),
            Ok(status) => format!("status {}", status.as_str_name()),
            Err(error) => error.to_string(),
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(ProbeError::NotServing {
                address: address.to_owned(),
                within,
                last,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
