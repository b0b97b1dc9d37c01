//! Each service's settings type: the shared part plus the service's own sections.
//!
//! They live here, not in the service crates, so that everything that reads or validates a
//! service's settings (the service itself, `shippy config set`, tests) reaches them without
//! linking the service.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{CommonSettings, ServiceSettings};

/// All settings of the consignment service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct VesselSettings {
    /// Settings every service shares.
    #[serde(flatten)]
    pub common: CommonSettings,
    /// `vessel.*`.
    pub vessel: FleetSettings,
}

/// `vessel.*`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct UserSettings {
    /// Settings every service shares.
    #[serde(flatten)]
    pub common: CommonSettings,
    /// `auth.*`.
    pub auth: AuthSettings,
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
        changed
    }
}

/// `auth.*` of the user service.
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

impl Eq for AuthSettings {}

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
