//! Each service's settings type: the shared part plus the service's own sections.
//!
//! They live here, not in the service crates, so that everything that reads or validates a
//! service's settings (the service itself, `shippy config set`, tests) reaches them without
//! linking the service.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::{CommonSettings, ServiceSettings};

/// The settings keys of every service, for telling a typo from another service's setting.
pub(crate) fn every_service_key() -> Vec<String> {
    let mut keys = super::layers::known_keys(&ConsignmentSettings::default());
    keys.extend(super::layers::known_keys(&VesselSettings::default()));
    keys.extend(super::layers::known_keys(&UserSettings::default()));
    keys.extend(super::layers::known_keys(
        &super::gateway::GatewaySettings::default(),
    ));
    keys
}

/// All settings of the consignment service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct ConsignmentSettings {
    /// Settings every service shares.
    #[serde(flatten)]
    pub common: CommonSettings,
}

impl ServiceSettings for ConsignmentSettings {
    fn common(&self) -> &CommonSettings {
        &self.common
    }
}

/// All settings of the vessel service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct VesselSettings {
    /// Settings every service shares.
    #[serde(flatten)]
    pub common: CommonSettings,
    /// `vessel.*`.
    pub vessel: FleetSettings,
}

/// `vessel.*`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct FleetSettings {
    /// Add a small default fleet when the store is empty at start-up, and when switched on while
    /// running. Changeable at run time.
    pub seed_fleet: bool,
}

impl Default for FleetSettings {
    fn default() -> Self {
        Self { seed_fleet: true }
    }
}

impl ServiceSettings for VesselSettings {
    fn common(&self) -> &CommonSettings {
        &self.common
    }
}

/// All settings of the user service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct UserSettings {
    /// Settings every service shares.
    #[serde(flatten)]
    pub common: CommonSettings,
    /// `auth.*`.
    pub auth: AuthSettings,
    /// `user.*`.
    pub user: UserSection,
}

impl ServiceSettings for UserSettings {
    fn common(&self) -> &CommonSettings {
        &self.common
    }

    fn restart_needed(&self, new: &Self) -> Vec<&'static str> {
        let mut changed = self.common.restart_needed(&new.common);
        if self.auth != new.auth {
            changed.push("auth");
        }
        if self.user.oidc != new.user.oidc {
            changed.push("user.oidc");
        }
        changed
    }
}

/// `user.*`: the user service's own sections beside `auth.*`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct UserSection {
    /// `user.oidc.*`.
    pub oidc: OidcSettings,
}

/// `user.oidc.*`: the external OpenID Connect provider whose ID tokens `ExchangeToken` turns into
/// shippy tokens. Off unless `issuer` is set; read once at start-up. Nothing here is secret: the
/// provider's keys are public and shippy never sees a client secret (the client that signed the
/// user in holds it).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct OidcSettings {
    /// The provider's issuer URL, exactly as its discovery document and its tokens' `iss` spell
    /// it (`https://accounts.example.com`); `https` unless on a loopback address. Empty = off.
    pub issuer: String,
    /// The client id registered at the provider for shippy: the `aud` an ID token must carry.
    /// Required when `issuer` is set.
    pub audience: String,
    /// Clock skew tolerated between the provider and this service on `exp`, `nbf` and `iat`.
    pub leeway_secs: u64,
    /// Longest one request to the provider (discovery document, key set) may take.
    pub fetch_timeout_ms: u64,
}

impl Default for OidcSettings {
    fn default() -> Self {
        Self {
            issuer: String::new(),
            audience: String::new(),
            leeway_secs: 30,
            fetch_timeout_ms: 5_000,
        }
    }
}

/// `auth.*` of the user service.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct AuthSettings {
    /// The secret the token signing key (Ed25519) is derived from, at least 32 characters; only
    /// the user service needs it, and it is never logged.
    #[serde(serialize_with = "super::layers::redacted")]
    pub jwt_secret: SecretString,
    /// During a rotation, the secret being replaced: tokens signed with its key still verify
    /// until it is cleared (which revokes them). Empty = none.
    #[serde(serialize_with = "super::layers::redacted")]
    pub previous_jwt_secret: SecretString,
    /// `iss` of issued tokens, checked on validation.
    pub issuer: String,
    /// Token lifetime.
    pub token_ttl_secs: u64,
    /// Allows starting without a secret (a fixed, public dev secret is used). Never in production.
    pub dev_mode: bool,
    /// Most password hashes computed at once (each holds about 19 MiB of argon2 working memory,
    /// kept for reuse), so the hashing memory never exceeds this × 19 MiB. 0 = the number of CPUs,
    /// at most 4: hashing is CPU-bound, more at once adds memory, not throughput.
    pub max_concurrent_hashes: usize,
    /// Longest a sign-up or log-in waits for a free hashing slot before it is refused with
    /// `RESOURCE_EXHAUSTED` (never more than half the caller's own deadline).
    pub hash_queue_timeout_ms: u64,
    /// Log-in attempts per minute for one email (a burst of this many, then refilled evenly);
    /// 0 = unlimited.
    pub login_per_email_per_minute: u32,
    /// Log-in attempts and sign-ups together per minute from one client IP address (both cost a
    /// hash); 0 = unlimited.
    pub login_per_client_per_minute: u32,
}

impl AuthSettings {
    /// Most argon2 hashes at once: the [`Self::max_concurrent_hashes`] setting, or with 0 the
    /// number of CPUs this process may use, at most 4.
    pub fn hash_concurrency(&self) -> usize {
        match self.max_concurrent_hashes {
            0 => std::thread::available_parallelism()
                .map_or(1, std::num::NonZeroUsize::get)
                .clamp(1, 4),
            set => set,
        }
    }
}

// The secret has no derived comparison; compare it explicitly.
impl PartialEq for AuthSettings {
    fn eq(&self, other: &Self) -> bool {
        self.jwt_secret.expose_secret() == other.jwt_secret.expose_secret()
            && self.previous_jwt_secret.expose_secret() == other.previous_jwt_secret.expose_secret()
            && self.issuer == other.issuer
            && self.token_ttl_secs == other.token_ttl_secs
            && self.dev_mode == other.dev_mode
            && self.max_concurrent_hashes == other.max_concurrent_hashes
            && self.hash_queue_timeout_ms == other.hash_queue_timeout_ms
            && self.login_per_email_per_minute == other.login_per_email_per_minute
            && self.login_per_client_per_minute == other.login_per_client_per_minute
    }
}

impl Eq for AuthSettings {}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            jwt_secret: SecretString::from(""),
            previous_jwt_secret: SecretString::from(""),
            issuer: "shippy.user".to_owned(),
            token_ttl_secs: 24 * 3600,
            dev_mode: false,
            max_concurrent_hashes: 0,
            hash_queue_timeout_ms: 3_000,
            login_per_email_per_minute: 10,
            login_per_client_per_minute: 60,
        }
    }
}
