//! The etcd config centre: each service's settings document at `/<prefix>/config/<service>` (YAML or
//! JSON, the same shape as a settings file). It is a layer between the file and the environment:
//! read at start-up ([`ConfigCentre::fetch`]) and watched afterwards ([`ConfigCentre::feed`]). A
//! changed document is re-layered in full and validated; a bad one is refused with a message naming
//! the key and the service keeps its last good settings. Accepted settings are published on the
//! service's live settings channel ([`crate::config::Live`]), where each component with a setting
//! that can change at run time applies it; for the others the service logs that a restart is needed.

use std::{path::PathBuf, sync::Arc};

use etcd_client::PutOptions;
use tokio::sync::watch;

use crate::{
    config::{self, Layered, ServiceSettings, SettingsError},
    etcd::{Etcd, EtcdError, mirror},
};

/// Counter of config-centre documents this process saw change, by `outcome`: `applied` (now in
/// force) or `refused` (invalid; the last good settings stay). A document equal to the settings
/// in force counts as neither.
const UPDATES_METRIC: &str = "shippy_config_updates_total";

/// Config centre failures.
#[derive(Debug, thiserror::Error)]
pub enum CentreError {
    /// A service name that cannot be an etcd key segment.
    #[error("invalid service name {0:?}: use letters, digits, '-' and '_'")]
    InvalidName(String),
    /// etcd failed.
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    /// The stored document is not valid settings for the service (the message names the key).
    #[error("config centre document {key} is invalid: {source}")]
    Invalid {
        /// The etcd key.
        key: String,
        /// What is wrong.
        #[source]
        source: SettingsError,
    },
}

/// One service's document in etcd.
#[derive(Debug, Clone)]
pub struct ConfigCentre {
    etcd: Etcd,
    key: String,
}

impl ConfigCentre {
    /// The document of `service` on the process's etcd connection.
    pub fn new(etcd: Etcd, service: &str) -> Result<Self, CentreError> {
        let valid = !service.is_empty()
            && service
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(CentreError::InvalidName(service.to_owned()));
        }
        Ok(Self {
            key: etcd.key(&format!("config/{service}")),
            etcd,
        })
    }

    /// The etcd key, `/<prefix>/config/<service>`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The current document, if there is one.
    pub async fn fetch(&self) -> Result<Option<String>, CentreError> {
        let key = self.key.as_str();
        let response = self
            .etcd
            .request(|mut c| async move { c.get(key, None).await })
            .await?;
        Ok(response
            .kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
    }

    /// Replaces the document.
    pub async fn store(&self, document: &str) -> Result<(), CentreError> {
        let key = self.key.as_str();
        self.etcd
            .request(|mut c| async move { c.put(key, document, None::<PutOptions>).await })
            .await?;
        Ok(())
    }

    /// Settings of type `S` from every layer, with this document (as it is now) between `file` and
    /// the environment, and the keys no setting has.
    pub async fn layered<S: ServiceSettings>(
        &self,
        file: Option<&std::path::Path>,
    ) -> Result<Layered<S>, CentreError> {
        let document = self.fetch().await?;
        match &document {
            Some(_) => tracing::info!(key = %self.key, "settings read from the config centre"),
            None => tracing::info!(
                key = %self.key,
                "no config centre document; using file and environment"
            ),
        }
        config::layered_checked(file, document.as_deref(), None).map_err(|source| {
            CentreError::Invalid {
                key: self.key.clone(),
                source,
            }
        })
    }

    /// Watches the document in the background (through etcd restarts and outages) and publishes
    /// every valid change, re-layered with `file` and the environment, on `settings`. Ends when
    /// every receiver of `settings` is gone.
    pub async fn feed<S: ServiceSettings>(
        self,
        file: Option<PathBuf>,
        settings: watch::Sender<Arc<S>>,
    ) -> Result<(), CentreError> {
        let key = self.key.clone();
        // A prefix watch on the key also sees `<key>-other`; only the exact key counts.
        let mut documents = mirror(self.etcd.clone(), self.key.clone(), move |kvs| {
            kvs.get(&key)
                .map(|value| String::from_utf8_lossy(value).into_owned())
        })
        .await?;
        // The first document is looked at too: it may have changed between the read at start
        // and this watch, and such a change would otherwise wait for the next edit. When it is
        // the one read at start it changes nothing, and its unknown keys were reported then.
        documents.mark_changed();
        let mut first = true;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = settings.closed() => return,
                    changed = documents.changed() => if changed.is_err() { return },
                }
                let document = documents.borrow_and_update().clone();
                let report_unknown = !std::mem::replace(&mut first, false);
                let next: S = match config::layered_checked(
                    file.as_deref(),
                    document.as_deref(),
                    None,
                ) {
                    Ok(Layered { settings, unknown }) => {
                        for key in unknown.into_iter().filter(|_| report_unknown) {
                            tracing::warn!(key = %self.key, "{key}");
                        }
                        settings
                    }
                    Err(error) => {
                        tracing::error!(key = %self.key, %error, "config centre update refused; keeping the last good settings");
                        metrics::counter!(UPDATES_METRIC, "outcome" => "refused").increment(1);
                        continue;
                    }
                };
                let current = settings.borrow().clone();
                if *current == next {
                    continue;
                }
                let restart = current.restart_needed(&next);
                if !restart.is_empty() {
                    tracing::warn!(key = %self.key, changed = ?restart, "these settings changed in the config centre and take effect after a restart");
                }
                tracing::info!(key = %self.key, "config centre update applied");
                metrics::counter!(UPDATES_METRIC, "outcome" => "applied").increment(1);
                settings.send_replace(Arc::new(next));
            }
        });
        Ok(())
    }
}

/// Checks that `document` is a valid settings document for settings type `S`: parseable, and every
/// value of the right type. The error names the key.
pub fn validate<S: ServiceSettings>(document: &str) -> Result<S, SettingsError> {
    config::layered_with_env(None, Some(document), Some(::config::Map::new()))
}
