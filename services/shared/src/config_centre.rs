//! The etcd config centre: each service's settings document at `/<prefix>/config/<service>` (YAML or
//! JSON, the same shape as a settings file). It is a layer between the file and the environment:
//! read at start-up ([`crate::settings::load`]) and watched afterwards ([`watch`]). A changed
//! document is re-layered in full and validated; a bad one is refused with a message naming the key
//! and the service keeps its last good settings. Settings that can change at run time (log level,
//! client timeout, rate limits, and whatever a service handles in its callback) apply at once; for
//! the others the service logs that a restart is needed.

use std::{sync::Arc, time::Duration};

use etcd_client::{Client, PutOptions};
use tokio::sync::watch;

use crate::{
    discovery::{DiscoveryError, etcd},
    settings::{self, EtcdSettings, ServiceSettings},
};

/// One service's document in etcd.
#[derive(Clone)]
pub struct ConfigCentre {
    client: Client,
    key: String,
    timeout: Duration,
}

impl std::fmt::Debug for ConfigCentre {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigCentre")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// `/<prefix>/config/<service>`.
pub fn key(prefix: &str, service: &str) -> String {
    format!("/{}/config/{service}", prefix.trim_matches('/'))
}

impl ConfigCentre {
    /// The document of `service` in the cluster of `settings`.
    pub async fn connect(settings: &EtcdSettings, service: &str) -> Result<Self, DiscoveryError> {
        crate::discovery::validate_name(service)?;
        Ok(Self {
            client: etcd::client(settings).await?,
            key: key(&settings.prefix, service),
            timeout: Duration::from_millis(settings.request_timeout_ms.max(1)),
        })
    }

    /// The etcd key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The current document, if there is one.
    pub async fn fetch(&self) -> Result<Option<String>, DiscoveryError> {
        let mut client = self.client.clone();
        let response = tokio::time::timeout(self.timeout, client.get(self.key.as_str(), None))
            .await
            .map_err(|_| DiscoveryError::EtcdTimeout(self.timeout))??;
        Ok(response
            .kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
    }

    /// Replaces the document.
    pub async fn store(&self, document: &str) -> Result<(), DiscoveryError> {
        let mut client = self.client.clone();
        tokio::time::timeout(
            self.timeout,
            client.put(self.key.as_str(), document, None::<PutOptions>),
        )
        .await
        .map_err(|_| DiscoveryError::EtcdTimeout(self.timeout))??;
        Ok(())
    }

    /// The document, kept current in the background (through etcd restarts and outages).
    pub async fn subscribe(&self) -> Result<watch::Receiver<Option<String>>, DiscoveryError> {
        let key = self.key.clone();
        // A prefix watch on the key also sees `<key>-other`; only the exact key counts.
        etcd::mirror(
            self.client.clone(),
            self.key.clone(),
            self.timeout,
            move |kvs| {
                kvs.get(&key)
                    .map(|value| String::from_utf8_lossy(value).into_owned())
            },
        )
        .await
    }
}

/// Checks that `document` is a valid settings document for settings type `T`: parseable, and every
/// value of the right type. The error names the key.
pub fn validate<T: ServiceSettings>(document: &str) -> Result<T, settings::SettingsError> {
    settings::layered_with_env(None, Some(document), Some(config::Map::new()))
}

/// Watches the config centre (when `config_centre.enabled`) and applies changes to a running
/// service: the shared run-time settings here, the service's own through `apply(old, new)`. Returns
/// the current settings, updated on every accepted change.
pub async fn watch<T, F>(
    service: &str,
    initial: T,
    apply: F,
) -> anyhow::Result<watch::Receiver<Arc<T>>>
where
    T: ServiceSettings,
    F: Fn(&T, &T) + Send + 'static,
{
    let (tx, rx) = watch::channel(Arc::new(initial.clone()));
    if !initial.common().config_centre.enabled {
        return Ok(rx);
    }
    let centre = ConfigCentre::connect(&initial.common().etcd, service).await?;
    let mut documents = centre.subscribe().await?;
    let file = initial.common().config_file.clone();
    tokio::spawn(async move {
        let mut current = initial;
        while documents.changed().await.is_ok() {
            let document = documents.borrow_and_update().clone();
            let mut next: T = match settings::layered(file.as_deref(), document.as_deref()) {
                Ok(next) => next,
                Err(error) => {
                    tracing::error!(key = centre.key(), %error, "config centre update refused; keeping the last good settings");
                    continue;
                }
            };
            next.common_mut().config_file.clone_from(&file);
            if let Err(error) = apply_common(&current, &next) {
                tracing::error!(key = centre.key(), %error, "config centre update refused; keeping the last good settings");
                continue;
            }
            apply(&current, &next);
            let restart = current.restart_needed(&next);
            if !restart.is_empty() {
                tracing::warn!(key = centre.key(), changed = ?restart, "these settings changed in the config centre and take effect after a restart");
            }
            tracing::info!(key = centre.key(), "config centre update applied");
            current = next;
            tx.send_replace(Arc::new(current.clone()));
        }
    });
    Ok(rx)
}

/// Applies the shared settings that can change at run time.
fn apply_common<T: ServiceSettings>(current: &T, next: &T) -> Result<(), String> {
    let (old, new) = (current.common(), next.common());
    if old.log.level != new.log.level {
        crate::telemetry::set_level(&new.log.level)?;
        tracing::info!(level = %new.log.level, "log level changed");
    }
    if old.limits != new.limits {
        crate::ratelimit::RateLimit::global().update(&new.limits);
        tracing::info!(limits = ?new.limits, "rate limits changed");
    }
    if old.client.timeout_ms != new.client.timeout_ms {
        crate::balance::set_default_timeout(new.client.timeout());
        tracing::info!(timeout_ms = new.client.timeout_ms, "client timeout changed");
    }
    Ok(())
}
