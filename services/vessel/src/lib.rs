//! The vessel service: keeps the fleet and finds the best-fitting available vessel for a consignment.
//!
//! Entry point for readers: [`Application::build`] wires settings, discovery, the store and the
//! gRPC handler; [`Application::run_until`] serves until shutdown.

pub mod domain;
pub mod grpc;
pub mod store;

use std::{net::SocketAddr, path::Path, sync::Arc};

use serde::Deserialize;
use shippy_proto::vessel::v1::vessel_service_server::VesselServiceServer;
use shippy_shared::{
    discovery,
    lifecycle::{Identity, LifecycleError, ServiceHost},
    settings::{CommonSettings, SettingsError},
};
use tonic::service::Routes;

/// How this service appears in discovery and health.
pub const IDENTITY: Identity = Identity {
    name: "vessel",
    grpc_service: shippy_proto::service_names::VESSEL,
    version: env!("CARGO_PKG_VERSION"),
};

/// All settings of the vessel service.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Settings every service shares.
    #[serde(flatten)]
    pub common: CommonSettings,
    /// `vessel.*`.
    pub vessel: VesselSettings,
}

/// `vessel.*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct VesselSettings {
    /// Add a small default fleet when the store is empty at start-up.
    pub seed_fleet: bool,
}

impl Default for VesselSettings {
    fn default() -> Self {
        Self { seed_fleet: true }
    }
}

impl Settings {
    /// Loads every layer (see [`shippy_shared::settings`]).
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        shippy_shared::settings::layered(file, None)
    }
}

/// A built, bound vessel service.
#[derive(Debug)]
pub struct Application {
    host: ServiceHost,
    routes: Routes,
}

impl Application {
    /// Connects discovery and the store, seeds the fleet if asked, binds the port.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let registry = discovery::connect(&settings.common).await?;
        let store = store::open(&settings).await?;
        if settings.vessel.seed_fleet {
            let added = store::seed_if_empty(store.as_ref()).await?;
            if added > 0 {
                tracing::info!(added, "seeded the default fleet");
            }
        }
        let host = ServiceHost::bind(IDENTITY, &settings.common, registry).await?;
        let routes = Routes::new(VesselServiceServer::new(grpc::VesselHandler::new(
            Arc::clone(&store),
        )));
        Ok(Self { host, routes })
    }

    /// The bound address (the real port when 0 was configured).
    pub fn local_addr(&self) -> SocketAddr {
        self.host.local_addr()
    }

    /// Serves until `shutdown` completes, then shuts down in order.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), LifecycleError> {
        self.host.serve(self.routes, shutdown).await
    }
}
