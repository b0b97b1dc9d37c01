//! A fault switch for tests of resilience (`make chaos`): while it is on, the instance answers every
//! call of its API with `UNAVAILABLE`, as a half-broken instance that still accepts connections
//! and passes health checks would. SIGUSR1 turns it on and off.
//!
//! Only in builds with the `fault-injection` feature (`cargo build --features fault-injection -p
//! shippy-vessel`), never in the images: a production binary must not have a signal that makes it
//! fail every call. (The module is compiled for this crate's unit tests too, so its layer is tested
//! in every `cargo test`.)

use std::sync::{
    Arc, Weak,
    atomic::{AtomicBool, Ordering},
};

use tonic::Status;

use super::limits::Gate;

/// The message of every call refused while the switch is on.
const INJECTED: &str = "fault injected: this instance fails every call (SIGUSR1 turns it off)";

/// On or off, shared by every clone; off when made.
#[derive(Debug, Clone, Default)]
pub(super) struct FaultSwitch {
    on: Arc<AtomicBool>,
}

impl FaultSwitch {
    /// A switch that SIGUSR1 toggles, each time with a warning in the log. The listening task
    /// holds it weakly, so it ends with the server stack.
    pub(super) fn on_sigusr1() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut signals = signal(SignalKind::user_defined1())?;
        let switch = Self::default();
        let weak: Weak<AtomicBool> = Arc::downgrade(&switch.on);
        tokio::spawn(async move {
            while signals.recv().await.is_some() {
                let Some(on) = weak.upgrade() else { return };
                // `fetch_xor(true)` flips it and tells what it was.
                if on.fetch_xor(true, Ordering::AcqRel) {
                    tracing::warn!("SIGUSR1: fault injection OFF: calls are served again");
                } else {
                    tracing::warn!(
                        "SIGUSR1: fault injection ON: every call is answered UNAVAILABLE until the next SIGUSR1"
                    );
                }
            }
        });
        tracing::warn!(
            "built with fault injection: SIGUSR1 makes this instance fail every call (test builds only)"
        );
        Ok(switch)
    }

    #[cfg(test)]
    fn is_on(&self) -> bool {
        self.on.load(Ordering::Acquire)
    }
}

/// While on, every call gets `UNAVAILABLE` before reaching its handler.
impl Gate for FaultSwitch {
    type Guard = ();

    fn admit(&self, _path: &str) -> Result<(), Status> {
        if self.on.load(Ordering::Acquire) {
            Err(Status::unavailable(INJECTED))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use nix::sys::signal::{Signal, raise};
    use shippy_proto::vessel::v1::{GetRequest, vessel_service_client::VesselServiceClient};
    use tonic::{
        Code,
        transport::{Channel, Server},
    };
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };

    use super::*;
    use crate::runtime::limits::GateLayer;

    /// Raises SIGUSR1 and waits (bounded) until the switch is `on`.
    async fn toggle_until(switch: &FaultSwitch, on: bool) {
        raise(Signal::SIGUSR1).expect("raise SIGUSR1");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while switch.is_on() != on {
            assert!(
                tokio::time::Instant::now() < deadline,
                "SIGUSR1 not applied"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Real gRPC over loopback: a server with the layer in its stack, health beside an API (here
    /// one with no routes: a call that passes the layer is answered UNIMPLEMENTED by the router).
    #[tokio::test]
    async fn sigusr1_toggles_unavailable_answers_and_health_stays_serving() {
        let switch = FaultSwitch::on_sigusr1().expect("SIGUSR1 handler");
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let server = Server::builder()
            .layer(GateLayer::new(switch.clone()))
            .add_service(health_service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
        let server = tokio::spawn(server);
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        let mut api = VesselServiceClient::new(channel.clone());
        let mut probe = HealthClient::new(channel);
        let call = async |api: &mut VesselServiceClient<Channel>| {
            api.get_vessels(GetRequest::default())
                .await
                .expect_err("no route")
        };
        let serving = async |probe: &mut HealthClient<Channel>| {
            probe
                .check(HealthCheckRequest::default())
                .await
                .expect("health answers")
                .into_inner()
                .status()
        };

        assert_eq!(call(&mut api).await.code(), Code::Unimplemented, "off");
        toggle_until(&switch, true).await;
        let refused = call(&mut api).await;
        assert_eq!(refused.code(), Code::Unavailable);
        assert_eq!(refused.message(), INJECTED);
        assert_eq!(serving(&mut probe).await, ServingStatus::Serving);
        toggle_until(&switch, false).await;
        assert_eq!(
            call(&mut api).await.code(),
            Code::Unimplemented,
            "off again"
        );
        server.abort();
    }
}
