//! The vessel service: keeps the fleet and finds the best-fitting available vessel for a consignment.
//!
//! Entry point for readers: [`build`] wires settings, discovery, the store and the
//! gRPC handler into an [`Application`]; its `run_until` serves until shutdown.

pub mod domain;
pub mod grpc;
pub mod store;

use std::{path::Path, sync::Arc};

use serde::Deserialize;
use shippy_proto::vessel::v1::vessel_service_server::VesselServiceServer;
use shippy_shared::{
    auth::Authenticator,
    balance::BalancedChannel,
    discovery,
    lifecycle::{Application, Identity, ServiceHost},
    settings::{CommonSettings, ServiceSettings},
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
    /// Loads every layer: defaults, `file`, the etcd config centre (when enabled), `SHIPPY_*`.
    pub async fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        shippy_shared::settings::load(IDENTITY.name, file).await
    }
}

impl ServiceSettings for Settings {
    fn common(&self) -> &CommonSettings {
        &self.common
    }

    fn common_mut(&mut self) -> &mut CommonSettings {
        &mut self.common
    }
}

/// Connects discovery and the store, seeds the fleet if asked, binds the port.
///
/// With MongoDB the service starts NOT_SERVING; a supervisor creates the index and seeds the
/// fleet once the database answers, then turns it SERVING.
pub async fn build(settings: Settings) -> anyhow::Result<Application> {
    let registry = discovery::connect(&settings.common).await?;
    let opened = store::open(&settings).await?;
    let seed = settings.vessel.seed_fleet;
    if seed && opened.mongo.is_none() {
        seed_fleet(opened.store.as_ref()).await?;
    }
    let users =
        BalancedChannel::discover(registry.as_ref(), "user", &settings.common.client).await?;
    let mut host = ServiceHost::bind(IDENTITY, &settings.common, registry).await?;
    // Live settings: the shared ones apply inside `watch`; switching the seed on seeds an empty store.
    let reload_store = Arc::clone(&opened.store);
    shippy_shared::config_centre::watch(
        IDENTITY.name,
        settings.clone(),
        move |old: &Settings, new: &Settings| {
            if new.vessel.seed_fleet && !old.vessel.seed_fleet {
                let store = Arc::clone(&reload_store);
                tokio::spawn(async move {
                    if let Err(error) = seed_fleet(store.as_ref()).await {
                        tracing::warn!(%error, "could not seed the fleet");
                    }
                });
            }
        },
    )
    .await?;
    let supervisor = opened.mongo.map(|mongo| {
        host.start_not_serving();
        let database = mongo.database().clone();
        let init = move || {
            let mongo = Arc::clone(&mongo);
            async move {
                mongo.ensure_indexes().await?;
                if seed {
                    seed_fleet(mongo.as_ref()).await?;
                }
                Ok(())
            }
        };
        shippy_shared::mongo::supervise(database, host.health(), IDENTITY.grpc_service, init)
    });
    let routes = Routes::new(VesselServiceServer::with_interceptor(
        grpc::VesselHandler::new(Arc::clone(&opened.store), Authenticator::new(users)),
        shippy_shared::ratelimit::RateLimit::global().clone(),
    ));
    Ok(Application::new(host, routes, supervisor))
}

/// Adds the default fleet to an empty store.
async fn seed_fleet(
    store: &dyn store::VesselStore,
) -> Result<(), shippy_shared::store::StoreError> {
    let added = store::seed_if_empty(store).await?;
    if added > 0 {
        tracing::info!(added, "seeded the default fleet");
    }
    Ok(())
}
