//! Serving a service: health and reflection beside it, registration once it listens, and an orderly
//! shutdown (deregister, drain, stop accepting, finish in-flight calls).

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use tokio_stream::wrappers::TcpListenerStream;
use tonic::{service::Routes, transport::Server};
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{
    discovery::{Registry, ServiceInstance},
    net::{self, Bound},
    settings::{CommonSettings, ShutdownSettings},
};

/// Who a service is: its discovery name, its gRPC service name and its version.
#[derive(Debug, Clone, Copy)]
pub struct Identity {
    /// Name in discovery, e.g. `vessel`.
    pub name: &'static str,
    /// Fully qualified gRPC service, e.g. `shippy.vessel.v1.VesselService`.
    pub grpc_service: &'static str,
    /// Binary version.
    pub version: &'static str,
}

/// Lifecycle failures.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// The port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// What was asked for.
        addr: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Registration failed.
    #[error("cannot register in discovery: {0}")]
    Register(#[from] crate::discovery::DiscoveryError),
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    /// The server task panicked.
    #[error("gRPC server task failed: {0}")]
    Crashed(String),
    /// Reflection could not be built.
    #[error("server reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// A bound, not yet serving, service process. Tests read [`ServiceHost::local_addr`] before serving.
#[derive(Debug)]
pub struct ServiceHost {
    identity: Identity,
    bound: Bound,
    registry: Arc<dyn Registry>,
    health: HealthReporter,
    health_service:
        tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService>,
    shutdown: ShutdownSettings,
    serving_on_start: bool,
}

impl ServiceHost {
    /// Binds the configured port (0 allowed).
    pub async fn bind(
        identity: Identity,
        settings: &CommonSettings,
        registry: Arc<dyn Registry>,
    ) -> Result<Self, LifecycleError> {
        let bound = net::bind(&settings.server)
            .await
            .map_err(|source| LifecycleError::Bind {
                addr: format!("{}:{}", settings.server.host, settings.server.port),
                source,
            })?;
        crate::ratelimit::RateLimit::global().update(&settings.limits);
        let health = HealthReporter::new();
        let health_service = tonic_health::pb::health_server::HealthServer::new(
            tonic_health::server::HealthService::from_health_reporter(health.clone()),
        );
        Ok(Self {
            identity,
            bound,
            registry,
            health,
            health_service,
            shutdown: settings.shutdown.clone(),
            serving_on_start: true,
        })
    }

    /// The bound socket address.
    pub fn local_addr(&self) -> SocketAddr {
        self.bound.local_addr
    }

    /// The address registered in discovery.
    pub fn advertised(&self) -> &str {
        &self.bound.advertised
    }

    /// The registry this service registers in (and resolves its dependencies with).
    pub fn registry(&self) -> Arc<dyn Registry> {
        Arc::clone(&self.registry)
    }

    /// Health of this service; report NOT_SERVING while a dependency it cannot work without is down.
    pub fn health(&self) -> HealthReporter {
        self.health.clone()
    }

    /// Leaves health NOT_SERVING at start; whoever holds [`ServiceHost::health`] turns it on.
    pub fn start_not_serving(&mut self) {
        self.serving_on_start = false;
    }

    /// Serves `routes` (plus health and reflection) until `shutdown` completes, then shuts down in
    /// order: deregister and report NOT_SERVING, keep serving for `shutdown.drain_ms` so clients move
    /// away, stop accepting, wait up to `shutdown.grace_ms` for in-flight calls.
    pub async fn serve(
        self,
        routes: Routes,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), LifecycleError> {
        let Self {
            identity,
            bound,
            registry,
            health,
            health_service,
            shutdown: timing,
            serving_on_start,
        } = self;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(shippy_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let status = if serving_on_start {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        health.set_service_status("", status).await;
        health
            .set_service_status(identity.grpc_service, status)
            .await;

        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = Server::builder()
            .add_routes(routes)
            .add_service(health_service)
            .add_service(reflection)
            .serve_with_incoming_shutdown(incoming(bound.listener), async {
                let _ = stop_rx.await;
            });
        let mut server = tokio::spawn(server);

        let mut instance =
            ServiceInstance::new(identity.name, identity.version, bound.advertised.clone());
        instance
            .metadata
            .insert("grpc_service".into(), identity.grpc_service.into());
        instance
            .metadata
            .insert("pid".into(), std::process::id().to_string());
        let registration = match registry.register(instance).await {
            Ok(registration) => registration,
            Err(error) => {
                server.abort();
                return Err(error.into());
            }
        };
        tracing::info!(service = identity.name, listen = %bound.local_addr, advertised = %bound.advertised, id = %registration.instance().id, "serving");

        tokio::select! {
            () = shutdown => {}
            result = &mut server => {
                registration.deregister().await;
                return match result {
                    Ok(result) => result.map_err(Into::into),
                    Err(join) => Err(LifecycleError::Crashed(join.to_string())),
                };
            }
        }

        tracing::info!(service = identity.name, "shutting down: deregistering");
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        health
            .set_service_status(identity.grpc_service, ServingStatus::NotServing)
            .await;
        registration.deregister().await;
        tokio::time::sleep(Duration::from_millis(timing.drain_ms)).await;
        tracing::info!(
            service = identity.name,
            "draining: no new connections, finishing in-flight calls"
        );
        let _ = stop_tx.send(());
        match tokio::time::timeout(Duration::from_millis(timing.grace_ms), &mut server).await {
            Ok(Ok(result)) => result?,
            Ok(Err(join)) => tracing::error!(error = %join, "server task failed"),
            Err(_) => {
                tracing::warn!(
                    grace_ms = timing.grace_ms,
                    "in-flight calls did not finish in time; exiting anyway"
                );
                server.abort();
            }
        }
        tracing::info!(service = identity.name, "stopped");
        Ok(())
    }
}

/// Accepted connections with Nagle's algorithm off. tonic's `tcp_nodelay` only applies to listeners
/// it binds itself; without this, small gRPC replies wait for delayed ACKs (~40 ms stalls).
fn incoming(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    TcpListenerStream::new(listener).map(|accepted| {
        accepted.inspect(|stream| {
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY");
            }
        })
    })
}

/// A built service, ready to serve: its bound host, its gRPC routes and, when its store is MongoDB,
/// the supervisor that keeps its health in line with the database.
#[derive(Debug)]
pub struct Application {
    host: ServiceHost,
    routes: Routes,
    supervisor: Option<crate::mongo::Supervisor>,
}

impl Application {
    /// Puts the parts together; each service's `build` makes them.
    pub fn new(
        host: ServiceHost,
        routes: Routes,
        supervisor: Option<crate::mongo::Supervisor>,
    ) -> Self {
        Self {
            host,
            routes,
            supervisor,
        }
    }

    /// The bound address (the real port when 0 was configured).
    pub fn local_addr(&self) -> SocketAddr {
        self.host.local_addr()
    }

    /// Serves until `shutdown` completes, then shuts down in order (see [`ServiceHost::serve`]).
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), LifecycleError> {
        let Self {
            host,
            routes,
            supervisor,
        } = self;
        let shutdown = async move {
            shutdown.await;
            // Stop watching the store before the host reports NOT_SERVING for the shutdown, so
            // the supervisor cannot turn it back to SERVING while draining.
            if let Some(supervisor) = supervisor {
                supervisor.stop().await;
            }
        };
        host.serve(routes, shutdown).await
    }
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
///
/// The handlers are installed when this is called, not when the future is first polled: call it
/// first thing in `main`, so a signal that arrives while the service is still starting leads to an
/// orderly shutdown (deregistered, exit 0) instead of the default action, an instant death that
/// leaves the registration behind.
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
