//! The consignment service: takes a consignment from an authenticated user, asks the vessel service
//! (found through discovery) for a vessel that fits, stores it and answers with its `vessel_id`.
//!
//! Entry point for readers: [`build`].

pub mod domain;
pub mod grpc;
pub mod store;

use std::{path::Path, sync::Arc};

use serde::Deserialize;
use shippy_proto::consignment::v1::shipping_service_server::ShippingServiceServer;
use shippy_shared::{
    balance::BalancedChannel,
    discovery,
    lifecycle::{Application, Identity, ServiceHost},
    settings::{CommonSettings, ServiceSettings},
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

/// Connects discovery, the store, and balanced channels to the vessel and user services.
///
/// With MongoDB the service starts NOT_SERVING and a supervisor turns it SERVING once the
/// database answers.
pub async fn build(settings: Settings) -> anyhow::Result<Application> {
    let registry = discovery::connect(&settings.common).await?;
    let opened = store::open(&settings).await?;
    let client = &settings.common.client;
    let vessels = BalancedChannel::discover(registry.as_ref(), "vessel", client).await?;
    let users = BalancedChannel::discover(registry.as_ref(), "user", client).await?;
    let mut host = ServiceHost::bind(IDENTITY, &settings.common, registry).await?;
    // Live settings (log level, client timeout, rate limits) apply inside `watch`.
    shippy_shared::config_centre::watch(
        IDENTITY.name,
        settings.clone(),
        |_: &Settings, _: &Settings| {},
    )
    .await?;
    let supervisor = opened.mongo.map(|mongo| {
        host.start_not_serving();
        // Consignments need no index beyond `_id`: nothing to initialise.
        shippy_shared::mongo::supervise(
            mongo.database().clone(),
            host.health(),
            IDENTITY.grpc_service,
            || async { Ok(()) },
        )
    });
    let handler = grpc::ShippingHandler::new(Arc::clone(&opened.store), vessels, users);
    let routes = Routes::new(ShippingServiceServer::with_interceptor(
        handler,
        shippy_shared::ratelimit::RateLimit::global().clone(),
    ));
    Ok(Application::new(host, routes, supervisor))
}
