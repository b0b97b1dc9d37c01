//! The consignment service: takes a consignment from an authenticated user, asks the vessel service
//! (found through discovery) for a vessel that fits, stores it and answers with its `vessel_id`.
//!
//! Entry point for readers: [`Application::build`].

pub mod domain;
pub mod grpc;
pub mod store;

use std::{net::SocketAddr, path::Path, sync::Arc};

use serde::Deserialize;
use shippy_proto::consignment::v1::shipping_service_server::ShippingServiceServer;
use shippy_shared::{
    balance::BalancedChannel,
    discovery,
    lifecycle::{Identity, LifecycleError, ServiceHost},
    settings::{CommonSettings, SettingsError},
};
use tonic::service::Routes;

/// How this service appears in discovery and health.
pub const IDENTITY: Identity = Identity {
    name: "consignment",
    grpc_service: shippy_proto::service_names::SHIPPING,
    version: env!("CARGO_PKG_VERSION"),
};

/// All settings of the consignment service.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Settings every service shares.
    #[serde(flatten)]
    pub common: CommonSettings,
}

impl Settings {
    /// Loads every layer (see [`shippy_shared::settings`]).
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        shippy_shared::settings::layered(file, None)
    }
}

/// A built, bound consignment service.
#[derive(Debug)]
pub struct Application {
    host: ServiceHost,
    routes: Routes,
}

impl Application {
    /// Connects discovery, the store, and balanced channels to the vessel and user services.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let registry = discovery::connect(&settings.common).await?;
        let store = store::open(&settings).await?;
        let client = &settings.common.client;
        let vessels = BalancedChannel::discover(registry.as_ref(), "vessel", client).await?;
        let users = BalancedChannel::discover(registry.as_ref(), "user", client).await?;
        let host = ServiceHost::bind(IDENTITY, &settings.common, registry).await?;
        let handler = grpc::ShippingHandler::new(Arc::clone(&store), vessels, users);
        Ok(Self {
            host,
            routes: Routes::new(ShippingServiceServer::new(handler)),
        })
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
