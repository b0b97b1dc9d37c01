//! The user service: registration with argon2-hashed passwords, authentication issuing HS256 JWTs,
//! and token validation for the other services.
//!
//! Entry point for readers: [`build`].

pub mod domain;
pub mod grpc;
pub mod password;
pub mod store;
pub mod token;

use std::{path::Path, sync::Arc, time::Duration};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use shippy_proto::user::v1::user_service_server::UserServiceServer;
use shippy_shared::{
    discovery,
    lifecycle::{Application, Identity, ServiceHost},
    settings::{CommonSettings, ServiceSettings},
};
use tonic::service::Routes;

/// How this service appears in discovery and health.
pub const IDENTITY: Identity = Identity {
    name: "user",
    grpc_service: shippy_proto::service_names::USER,
    version: env!("CARGO_PKG_VERSION"),
};

/// Secret used only when `auth.dev_mode` is on and no secret is configured.
const DEV_SECRET: &str = "shippy-dev-mode-secret-never-use-in-production";
/// Shortest secret accepted outside dev mode (HS256 wants at least 256 bits).
pub const MIN_SECRET_LEN: usize = 32;

/// All settings of the user service.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Settings every service shares.
    #[serde(flatten)]
    pub common: CommonSettings,
    /// `auth.*`.
    pub auth: AuthSettings,
}

/// `auth.*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AuthSettings {
    /// HS256 signing secret, at least 32 characters; never logged.
    pub jwt_secret: SecretString,
    /// `iss` of issued tokens, checked on validation.
    pub issuer: String,
    /// Token lifetime.
    pub token_ttl_secs: u64,
    /// Allows starting without a secret (a fixed, public dev secret is used). Never in production.
    pub dev_mode: bool,
}

// The secret has no derived comparison; compare it explicitly.
impl PartialEq for AuthSettings {
    fn eq(&self, other: &Self) -> bool {
        self.jwt_secret.expose_secret() == other.jwt_secret.expose_secret()
            && self.issuer == other.issuer
            && self.token_ttl_secs == other.token_ttl_secs
            && self.dev_mode == other.dev_mode
    }
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            jwt_secret: SecretString::from(""),
            issuer: "shippy.user".to_owned(),
            token_ttl_secs: 24 * 3600,
            dev_mode: false,
        }
    }
}

impl AuthSettings {
    /// The signing secret to use, or why the service must not start.
    pub fn secret(&self) -> anyhow::Result<String> {
        let secret = self.jwt_secret.expose_secret();
        if secret.is_empty() || secret == DEV_SECRET {
            anyhow::ensure!(
                self.dev_mode,
                "auth.jwt_secret is not set: set SHIPPY_AUTH__JWT_SECRET to a random string of at least \
                 {MIN_SECRET_LEN} characters (e.g. `openssl rand -hex 32`), or SHIPPY_AUTH__DEV_MODE=true \
                 for local development only"
            );
            tracing::warn!("auth.dev_mode: signing tokens with the public development secret");
            return Ok(DEV_SECRET.to_owned());
        }
        anyhow::ensure!(
            secret.len() >= MIN_SECRET_LEN,
            "auth.jwt_secret is too short: use at least {MIN_SECRET_LEN} characters"
        );
        Ok(secret.to_owned())
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
    fn restart_needed(&self, new: &Self) -> Vec<&'static str> {
        let mut changed = self.common.restart_needed(&new.common);
        if self.auth != new.auth {
            changed.push("auth");
        }
        changed
    }
}

/// Checks the secret, connects discovery and the store, binds the port.
///
/// With MongoDB the service starts NOT_SERVING; a supervisor creates the unique email index
/// once the database answers, then turns it SERVING.
pub async fn build(settings: Settings) -> anyhow::Result<Application> {
    let tokens = token::Tokens::new(
        settings.auth.secret()?.as_bytes(),
        &settings.auth.issuer,
        Duration::from_secs(settings.auth.token_ttl_secs.max(1)),
    );
    let registry = discovery::connect(&settings.common).await?;
    let opened = store::open(&settings).await?;
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
        let database = mongo.database().clone();
        // The unique email index must exist before the service reports SERVING.
        let init = move || {
            let mongo = Arc::clone(&mongo);
            async move { mongo.ensure_indexes().await }
        };
        shippy_shared::mongo::supervise(database, host.health(), IDENTITY.grpc_service, init)
    });
    let routes = Routes::new(UserServiceServer::with_interceptor(
        grpc::UserHandler::new(Arc::clone(&opened.store), tokens),
        shippy_shared::ratelimit::RateLimit::global().clone(),
    ));
    Ok(Application::new(host, routes, supervisor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_to_start_without_a_real_secret_unless_in_dev_mode() {
        let mut auth = AuthSettings::default();
        let err = auth.secret().expect_err("empty secret refused");
        assert!(err.to_string().contains("SHIPPY_AUTH__JWT_SECRET"));
        auth.jwt_secret = SecretString::from("short");
        assert!(auth.secret().is_err());
        auth.jwt_secret = SecretString::from(DEV_SECRET);
        assert!(
            auth.secret().is_err(),
            "the public dev secret is refused outside dev mode"
        );
        auth.dev_mode = true;
        assert_eq!(auth.secret().expect("dev"), DEV_SECRET);
        auth.jwt_secret = SecretString::from("x".repeat(40));
        assert_eq!(auth.secret().expect("real").len(), 40);
        assert!(
            !format!("{auth:?}").contains("xxxx"),
            "secret must not show in Debug"
        );
    }
}
