//! The user service: registration with argon2-hashed passwords, authentication issuing Ed25519
//! JWTs, token validation for the other services, and the exchange of an external OpenID Connect
//! provider's ID tokens for its own tokens (`user.oidc.*`).
//!
//! For readers: [`UserApp::build`] wires the store and the gRPC handler; the rules are in
//! [`domain`] (with [`password`] hashing and [`token`] signing), the edge (requests in, statuses
//! out) in [`grpc`], persistence in [`store`]. Running, settings, discovery and shutdown are the
//! shared skeleton, `shippy_shared::runtime`.

pub mod domain;
pub mod grpc;
pub mod limits;
pub mod password;
pub mod store;
pub mod token;

use std::{sync::Arc, time::Duration};

use secrecy::ExposeSecret;
use shippy_proto::user::v1::user_service_server::UserServiceServer;
use shippy_shared::{
    auth::oidc::OidcVerifier,
    catalog::{self, ServiceSpec},
    config::services::UserSettings,
    runtime::{Context, Service},
    store::Backend,
};
use tonic::service::Routes;

use crate::{
    limits::LoginLimits,
    password::Hasher,
    store::{UserStore, memory::MemoryStore, mongo::MongoStore, sqlite::SqliteStore},
    token::Tokens,
};

/// The user service, for `shippy_shared::runtime`.
#[derive(Debug)]
pub struct UserApp;

impl Service for UserApp {
    const SPEC: &'static ServiceSpec = &catalog::USER;
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    type Settings = UserSettings;
    /// Both hash a password: the hasher bounds them itself (`auth.hash_concurrency`) and answers
    /// `RESOURCE_EXHAUSTED` when a caller would wait too long.
    const SELF_LIMITED: &'static [&'static str] = &["Auth", "Create"];

    /// Checks the signing secret (refusing to start without a real one outside dev mode) and the
    /// OpenID Connect settings, opens the store, and sizes the password hashing and log-in
    /// limits. `auth.*` and `user.oidc.*` are read once: changing them needs a restart.
    ///
    /// With MongoDB the service is NOT_SERVING until the database answers and the unique email
    /// index exists.
    async fn build(context: &mut Context<UserSettings>) -> anyhow::Result<Routes> {
        let auth = context.settings().auth.clone();
        // Checked now, so a wrong setting stops the start; the provider itself is asked on the
        // first exchange, so its outage does not.
        let oidc = OidcVerifier::new(&context.settings().user.oidc)?.map(Arc::new);
        if let Some(oidc) = &oidc {
            tracing::info!(
                issuer = oidc.issuer(),
                "ExchangeToken takes ID tokens of this OpenID Connect provider"
            );
        }
        let previous = auth.previous_jwt_secret.expose_secret();
        let tokens = Tokens::new(
            token::signing_secret(&auth)?.expose_secret().as_bytes(),
            (!previous.is_empty()).then_some(previous.as_bytes()),
            &auth.issuer,
            Duration::from_secs(auth.token_ttl_secs.max(1)),
        );
        tracing::info!(
            keys = ?tokens.public_keys().map(|k| k.kid()).collect::<Vec<_>>(),
            "token keys (Ed25519): the first signs, all verify"
        );
        let store: Arc<dyn UserStore> = match context.store().await? {
            Backend::Sqlite(db) => Arc::new(SqliteStore::open(db).await?),
            Backend::Memory => Arc::new(MemoryStore::default()),
            Backend::Mongodb(database) => {
                let mongo = Arc::new(MongoStore::new(&database));
                let init_store = Arc::clone(&mongo);
                context.supervise_mongo(database, move || {
                    let store = Arc::clone(&init_store);
                    async move { store.ensure_indexes().await }
                });
                mongo
            }
        };
        let hasher = Hasher::new(
            auth.hash_concurrency(),
            Duration::from_millis(auth.hash_queue_timeout_ms),
        );
        tracing::info!(
            concurrent_hashes = hasher.capacity(),
            hash_memory_mib = hasher.capacity() * 19,
            login_per_client_per_minute = auth.login_per_client_per_minute,
            login_per_email_per_minute = auth.login_per_email_per_minute,
            "password hashing bounded"
        );
        let limits = LoginLimits::new(
            auth.login_per_client_per_minute,
            auth.login_per_email_per_minute,
        );
        let gateways = context.registry().subscribe(catalog::GATEWAY.name).await?;
        tokio::spawn(report_trusted_gateways(gateways.clone()));
        let handler = grpc::UserHandler::new(store, tokens, hasher, limits)
            .with_oidc(oidc)
            .with_proxies(gateways);
        Ok(Routes::new(UserServiceServer::new(handler)))
    }
}

/// Logs the gateways whose `x-forwarded-for` is believed each time they change: the log-in limit
/// counts their clients one by one, and everyone else by their own address.
async fn report_trusted_gateways(
    mut gateways: tokio::sync::watch::Receiver<shippy_shared::discovery::InstanceSet>,
) {
    loop {
        let addresses: Vec<String> = gateways
            .borrow_and_update()
            .iter()
            .map(|gateway| gateway.address.clone())
            .collect();
        tracing::info!(
            ?addresses,
            "client addresses forwarded by these gateways are believed"
        );
        if gateways.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::server::NamedService;

    #[test]
    fn the_catalog_names_the_grpc_service_this_crate_serves() {
        assert_eq!(
            UserApp::SPEC.grpc_service,
            <UserServiceServer<grpc::UserHandler> as NamedService>::NAME
        );
    }
}
