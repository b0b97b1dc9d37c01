//! Serving a service: health and reflection beside it, registration once it listens, readiness that
//! follows the service's dependencies, and an orderly shutdown (deregister, drain, stop accepting,
//! finish in-flight calls).

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use tokio::sync::watch;
use tonic::{service::Routes, transport::Server};
use tonic_health::{ServingStatus, server::HealthReporter};

use super::{
    admin,
    codec_errors::CodecErrorsLayer,
    connections,
    limits::{GateLayer, Limits},
    net::Bound,
    tracing_layer::TraceLayer,
};
use crate::{
    catalog::ServiceSpec,
    config::{ServerSettings, ShutdownSettings},
    discovery::{DiscoveryError, Registry, ServiceInstance, trace::EdgeSampler},
};

/// Why a service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// What was asked for.
        addr: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Registration failed.
    #[error("cannot register in discovery: {0}")]
    Register(#[from] DiscoveryError),
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    /// The server task panicked.
    #[error("gRPC server task failed: {0}")]
    Crashed(#[from] tokio::task::JoinError),
    /// Reflection could not be built.
    #[error("server reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The fault switch's signal handler could not be installed (`fault-injection` builds).
    #[cfg(feature = "fault-injection")]
    #[error("cannot listen for SIGUSR1 (the fault switch): {0}")]
    Signal(#[source] std::io::Error),
}

/// A bound, not yet serving, service: what the service registers as, where it listens, and what
/// its readiness depends on.
#[derive(Debug)]
pub(crate) struct ServiceHost {
    pub(crate) spec: &'static ServiceSpec,
    pub(crate) version: &'static str,
    pub(crate) bound: Bound,
    pub(crate) registry: Arc<dyn Registry>,
    pub(crate) shutdown: ShutdownSettings,
    /// Each must be `true` for the service to report SERVING (e.g. "the database answers").
    pub(crate) gates: Vec<watch::Receiver<bool>>,
    /// An HTTP listener served beside the gRPC port, if the service has one.
    pub(crate) http: Option<super::http::HttpSite>,
    /// The limits of the service's API: request rate and calls in flight (`limits.*`, live).
    pub(crate) limits: Limits,
    /// The connection bounds (`server.*`): handshake timeout, connection cap, HTTP/2 keepalive.
    /// (Its address settings were used when the port was bound.)
    pub(crate) server: ServerSettings,
    /// Where the admin HTTP port (metrics, probes) binds.
    pub(crate) admin: SocketAddr,
    /// How the server edge samples the calls it serves (from `telemetry.*`).
    pub(crate) sampler: EdgeSampler,
}

/// A built service, ready to serve. Tests read [`Application::local_addr`] before serving.
#[derive(Debug)]
pub struct Application {
    host: ServiceHost,
    routes: Routes,
}

impl Application {
    pub(crate) fn new(host: ServiceHost, routes: Routes) -> Self {
        Self { host, routes }
    }

    /// The bound address (the real port when 0 was configured).
    pub fn local_addr(&self) -> SocketAddr {
        self.host.bound.local_addr
    }

    /// The address registered in discovery.
    pub fn advertised(&self) -> &str {
        &self.host.bound.advertised
    }

    /// Serves `routes` (plus health and reflection) until `shutdown` completes, then shuts down in
    /// order: deregister and report NOT_SERVING, keep serving for `shutdown.drain_ms` so clients move
    /// away, stop accepting, wait up to `shutdown.grace_ms` for in-flight calls.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), HostError> {
        let Self { host, routes } = self;
        let ServiceHost {
            spec,
            version,
            bound,
            registry,
            shutdown: timing,
            gates,
            http,
            limits,
            server: bounds,
            admin: admin_addr,
            sampler,
        } = host;
        // Test builds only: the switch's signal handler, before anything is started.
        #[cfg(feature = "fault-injection")]
        let fault = super::fault::FaultSwitch::on_sigusr1().map_err(HostError::Signal)?;
        // The admin port first: if it cannot be bound, nothing has been started yet.
        let admin_listener = tokio::net::TcpListener::bind(admin_addr)
            .await
            .map_err(|source| HostError::Bind {
                addr: admin_addr.to_string(),
                source,
            })?;
        let admin_local = admin_listener
            .local_addr()
            .map_err(|source| HostError::Bind {
                addr: admin_addr.to_string(),
                source,
            })?;
        let probes = admin::Readiness::new(gates.clone());
        let admin_server = admin::serve(admin_listener, probes.clone());
        admin::record_build_info(spec.name, version);
        let registered = metrics::gauge!("shippy_registry_registered", "service" => spec.name);
        // Reflection lists what this port serves, nothing else.
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(shippy_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name(spec.grpc_service)
            .with_service_name("grpc.health.v1.Health")
            .build_v1()?;
        let (health, health_service) = tonic_health::server::health_reporter();
        // The first status is set before the port answers, so no probe sees SERVING too early.
        let open = gates.iter().all(|gate| *gate.borrow());
        set_status(&health, spec.grpc_service, serving_if(open)).await;
        let readiness = tokio::spawn(follow_gates(health.clone(), spec.grpc_service, gates, open));

        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        // Every cross-cutting behaviour of the server side is a layer here, in this one place;
        // connection-level bounds are in `connections` (the accepted sockets) and the keepalive.
        let server = Server::builder()
            .http2_keepalive_interval(bounds.keepalive_interval())
            .http2_keepalive_timeout(Some(bounds.keepalive_timeout()))
            // Outermost, so refused and unreadable calls get a span and a request id too.
            .layer(TraceLayer::new(bound.advertised.clone(), sampler))
            .layer(CodecErrorsLayer);
        // Test builds only: a switch that makes every call fail, before any limit counts it.
        #[cfg(feature = "fault-injection")]
        let server = server.layer(GateLayer::new(fault));
        let server = server
            // The rate first: a call it refuses takes no slot among those in flight.
            .layer(GateLayer::new(limits.rate))
            // Innermost, so a slot is held exactly while the handler serves the call.
            .layer(GateLayer::new(limits.concurrency))
            .add_routes(routes)
            .add_service(health_service)
            .add_service(reflection)
            .serve_with_incoming_shutdown(
                connections::incoming(bound.listener, &bounds, connections::Exempt::none()),
                async {
                    let _ = stop_rx.await;
                },
            );
        let mut server = tokio::spawn(server);
        let http_stop = tokio_util::sync::CancellationToken::new();
        let http_address = http.as_ref().map(super::http::HttpSite::advertised);
        let grace = Duration::from_millis(timing.grace_ms);
        let http_server =
            http.map(|site| tokio::spawn(super::http::serve(site, http_stop.clone(), grace)));

        let registered_version = bounds.version.as_deref().unwrap_or(version);
        let mut instance =
            ServiceInstance::new(spec.name, registered_version, bound.advertised.clone());
        instance
            .metadata
            .insert("grpc_service".into(), spec.grpc_service.into());
        instance
            .metadata
            .insert("pid".into(), std::process::id().to_string());
        instance.metadata.insert(
            "metrics_address".into(),
            admin::advertised(&bound.advertised, admin_local),
        );
        if let Some(address) = http_address {
            instance.metadata.insert("http_address".into(), address);
        }
        let registration = match registry.register(instance).await {
            Ok(registration) => registration,
            Err(error) => {
                server.abort();
                http_stop.cancel();
                readiness.abort();
                admin_server.abort();
                return Err(error.into());
            }
        };
        registered.set(1.0);
        tracing::info!(admin = %admin_local, "admin port: /metrics, /livez, /readyz");
        tracing::info!(service = spec.name, listen = %bound.local_addr, advertised = %bound.advertised, id = %registration.instance().id, "serving");

        tokio::select! {
            () = shutdown => {}
            result = &mut server => {
                http_stop.cancel();
                readiness.abort();
                registration.deregister().await;
                registered.set(0.0);
                admin_server.abort();
                return Ok(result??);
            }
        }

        tracing::info!(service = spec.name, "shutting down: deregistering");
        // Stop following the dependencies first, so nothing turns the status back to SERVING.
        readiness.abort();
        let _ = readiness.await;
        set_status(&health, spec.grpc_service, ServingStatus::NotServing).await;
        probes.stop();
        registration.deregister().await;
        registered.set(0.0);
        tokio::time::sleep(Duration::from_millis(timing.drain_ms)).await;
        tracing::info!(
            service = spec.name,
            "draining: no new connections, finishing in-flight calls"
        );
        let _ = stop_tx.send(());
        // The HTTP listener stops accepting at the same moment and finishes its own requests.
        http_stop.cancel();
        match tokio::time::timeout(grace, &mut server).await {
            Ok(result) => result??,
            Err(_) => {
                tracing::warn!(
                    grace_ms = timing.grace_ms,
                    "in-flight calls did not finish in time; exiting anyway"
                );
                server.abort();
            }
        }
        if let Some(http_server) = http_server {
            let _ = http_server.await;
        }
        admin_server.abort();
        tracing::info!(service = spec.name, "stopped");
        Ok(())
    }
}

fn serving_if(open: bool) -> ServingStatus {
    if open {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}

async fn set_status(health: &HealthReporter, grpc_service: &str, status: ServingStatus) {
    health.set_service_status("", status).await;
    health.set_service_status(grpc_service, status).await;
}

/// Keeps the health of `""` and `grpc_service` SERVING while every gate is open, NOT_SERVING
/// otherwise. Runs until aborted at shutdown.
async fn follow_gates(
    health: HealthReporter,
    grpc_service: &'static str,
    mut gates: Vec<watch::Receiver<bool>>,
    mut last: bool,
) {
    loop {
        let open = gates.iter_mut().all(|gate| *gate.borrow_and_update());
        if last != open {
            let status = serving_if(open);
            tracing::info!(service = grpc_service, ?status, "readiness changed");
            set_status(&health, grpc_service, status).await;
            last = open;
        }
        if gates.is_empty() {
            return;
        }
        let changes = gates.iter_mut().map(|gate| Box::pin(gate.changed()));
        let (result, index, _) = futures::future::select_all(changes).await;
        if result.is_err() {
            // A gate whose owner is gone stays as it last was; stop watching it.
            let gone = gates.remove(index);
            if !*gone.borrow() {
                tracing::warn!(
                    service = grpc_service,
                    "a readiness source stopped while not ready"
                );
                return;
            }
        }
    }
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
///
/// The handlers are installed when this is called, not when the future is first polled: call it
/// first thing, so a signal that arrives while the service is still starting leads to an orderly
/// shutdown (deregistered, exit 0) instead of the default action, an instant death that leaves
/// the registration behind.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())
        .inspect_err(|error| tracing::error!(%error, "cannot listen for SIGTERM"))
        .ok();
    let mut int = signal(SignalKind::interrupt())
        .inspect_err(|error| tracing::error!(%error, "cannot listen for SIGINT"))
        .ok();
    async move {
        let term = async {
            match term.as_mut() {
                Some(signal) => signal.recv().await,
                None => std::future::pending().await,
            }
        };
        let int = async {
            match int.as_mut() {
                Some(signal) => signal.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = term => tracing::info!("SIGTERM received"),
            _ = int => tracing::info!("SIGINT received"),
        }
    }
}
