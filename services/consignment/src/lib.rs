//! The consignment service: takes a consignment from an authenticated user, asks the vessel service
//! (found through discovery) for a vessel that fits, stores it and answers with its `vessel_id`.
//!
//! For readers: [`ConsignmentApp::build`] wires the store, the clients and the gRPC handler; the
//! rules are in [`domain`], the edge (requests in, statuses out) in [`grpc`], persistence in
//! [`store`]. Running, settings, discovery and shutdown are the shared skeleton,
//! `shippy_shared::runtime`.

pub mod domain;
pub mod grpc;
pub mod store;

use std::sync::Arc;

use shippy_proto::consignment::v1::shipping_service_server::ShippingServiceServer;
use shippy_shared::{
    auth::Authenticator,
    catalog::{self, ServiceSpec},
    config::services::ConsignmentSettings,
    runtime::{Context, Service},
    store::Backend,
};
use tonic::service::Routes;

use crate::store::{ConsignmentStore, memory::MemoryStore, mongo::MongoStore, sqlite::SqliteStore};

/// The consignment service, for `shippy_shared::runtime`.
#[derive(Debug)]
pub struct ConsignmentApp;

impl Service for ConsignmentApp {
    const SPEC: &'static ServiceSpec = &catalog::CONSIGNMENT;
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    type Settings = ConsignmentSettings;

    /// Opens the store and reaches the vessel service (to find vessels) and the user service (to
    /// check the tokens of every call) through balanced channels.
    ///
    /// With MongoDB the service is NOT_SERVING until the database answers.
    async fn build(context: &mut Context<ConsignmentSettings>) -> anyhow::Result<Routes> {
        let store: Arc<dyn ConsignmentStore> = match context.store().await? {
            Backend::Sqlite(db) => Arc::new(SqliteStore::open(db).await?),
            Backend::Memory => Arc::new(MemoryStore::default()),
            Backend::Mongodb(database) => {
                let mongo = Arc::new(MongoStore::new(&database));
                // Consignments need no index beyond `_id`: nothing to initialise.
                context.supervise_mongo(database, || async { Ok(()) });
                mongo
            }
        };
        let vessels = context.channel(&catalog::VESSEL).await?;
        let users = context.channel(&catalog::USER).await?;
        let handler = grpc::ShippingHandler::new(store, vessels, Authenticator::new(users));
        Ok(Routes::new(ShippingServiceServer::new(handler)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::server::NamedService;

    #[test]
    fn the_catalog_names_the_grpc_service_this_crate_serves() {
        assert_eq!(
            ConsignmentApp::SPEC.grpc_service,
            <ShippingServiceServer<grpc::ShippingHandler> as NamedService>::NAME
        );
    }
}
