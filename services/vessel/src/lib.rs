//! The vessel service: keeps the fleet and finds the best-fitting available vessel for a consignment.
//!
//! For readers: [`VesselApp::build`] wires the store and the gRPC handler; the rules are in
//! [`domain`], the edge (requests in, statuses out) in [`grpc`], persistence in [`store`]. Running,
//! settings, discovery and shutdown are the shared skeleton, `shippy_shared::runtime`.

pub mod domain;
pub mod grpc;
pub mod store;

use std::sync::Arc;

use shippy_proto::vessel::v1::vessel_service_server::VesselServiceServer;
use shippy_shared::{
    auth::Authenticator,
    catalog::{self, ServiceSpec},
    config::services::VesselSettings,
    runtime::{Context, Service},
    store::{Backend, StoreError},
};
use tokio::sync::watch;
use tonic::service::Routes;

use crate::store::{VesselStore, memory::MemoryStore, mongo::MongoStore, sqlite::SqliteStore};

/// The vessel service, for `shippy_shared::runtime`.
#[derive(Debug)]
pub struct VesselApp;

impl Service for VesselApp {
    const SPEC: &'static ServiceSpec = &catalog::VESSEL;
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    type Settings = VesselSettings;

    /// Opens the store (seeding the fleet if `vessel.seed_fleet`), follows the live seed setting,
    /// and reaches the user service to check the tokens of `Create` calls.
    ///
    /// With MongoDB the service is NOT_SERVING until the database answers and its index exists.
    async fn build(context: &mut Context<VesselSettings>) -> anyhow::Result<Routes> {
        let seed = context.watch(|s| s.vessel.seed_fleet);
        // Embedded stores are seeded now; MongoDB once it answers (it may be down right now).
        let (store, seed_now): (Arc<dyn VesselStore>, bool) = match context.store().await? {
            Backend::Sqlite(db) => (Arc::new(SqliteStore::open(db).await?), true),
            Backend::Memory => (Arc::new(MemoryStore::default()), true),
            Backend::Mongodb(database) => {
                let mongo = Arc::new(MongoStore::new(&database));
                let (init_store, init_seed) = (Arc::clone(&mongo), seed.clone());
                context.supervise_mongo(database, move || {
                    let (store, seed) = (Arc::clone(&init_store), *init_seed.borrow());
                    async move {
                        store.ensure_indexes().await?;
                        if seed {
                            seed_fleet(store.as_ref()).await?;
                        }
                        Ok(())
                    }
                });
                (mongo, false)
            }
        };
        if seed_now && *seed.borrow() {
            seed_fleet(store.as_ref()).await?;
        }
        follow_seed_setting(seed, Arc::clone(&store));
        let users = context.channel(&catalog::USER).await?;
        let handler = grpc::VesselHandler::new(store, Authenticator::new(users));
        Ok(Routes::new(VesselServiceServer::new(handler)))
    }
}

/// Switching `vessel.seed_fleet` on while running seeds an empty store.
fn follow_seed_setting(mut seed: watch::Receiver<bool>, store: Arc<dyn VesselStore>) {
    tokio::spawn(async move {
        while seed.changed().await.is_ok() {
            if *seed.borrow_and_update()
                && let Err(error) = seed_fleet(store.as_ref()).await
            {
                tracing::warn!(%error, "could not seed the fleet");
            }
        }
    });
}

/// Adds the default fleet to an empty store.
async fn seed_fleet(store: &dyn VesselStore) -> Result<(), StoreError> {
    let added = store::seed_if_empty(store).await?;
    if added > 0 {
        tracing::info!(added, "seeded the default fleet");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::server::NamedService;

    #[test]
    fn the_catalog_names_the_grpc_service_this_crate_serves() {
        assert_eq!(
            VesselApp::SPEC.grpc_service,
            <VesselServiceServer<grpc::VesselHandler> as NamedService>::NAME
        );
    }
}
