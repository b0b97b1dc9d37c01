//! Service discovery: instances register under a service name with a TTL and keep themselves alive;
//! clients subscribe to a name and get the live instance set, kept current in the background.
//!
//! Two backends implement [`Registry`]: [`local::LocalRegistry`] (files on one host, the zero-dependency
//! default) and [`etcd::EtcdRegistry`] (leases and watches). [`balance::BalancedChannel`] turns a
//! subscription into a gRPC transport that spreads calls over the live instances.

pub mod balance;
pub mod context;
pub mod etcd;
pub mod local;
pub mod trace;

use std::{collections::BTreeMap, fmt, sync::Arc, time::Duration};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::{sync::watch, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::config::{RegistryBackend, RegistrySettings};

/// One running instance of a service, as stored in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInstance {
    /// Unique per process start.
    pub id: String,
    /// Service name clients resolve, e.g. `vessel`.
    pub name: String,
    /// Version of the binary.
    pub version: String,
    /// `host:port` that clients dial.
    pub address: String,
    /// Free-form labels (gRPC service name, pid, ...).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

impl ServiceInstance {
    /// A new instance with a fresh random id.
    pub fn new(name: &str, version: &str, address: String) -> Self {
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.to_owned(),
            version: version.to_owned(),
            address,
            metadata: BTreeMap::new(),
        }
    }
}

/// Discovery failures.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// A service name that cannot be used as a path or key segment.
    #[error("invalid service name {0:?}: use letters, digits, '-' and '_'")]
    InvalidName(String),
    /// Local registry I/O.
    #[error("local registry at {path}: {cause}")]
    Io {
        /// Directory or file involved.
        path: std::path::PathBuf,
        /// Cause (part of the message, not a separate `source`, so it is printed once).
        cause: std::io::Error,
    },
    /// The local registry directory or one of its entries cannot be trusted (owner, mode, link).
    #[error("local registry at {path}: {problem}")]
    Untrusted {
        /// Directory or file involved.
        path: std::path::PathBuf,
        /// What is wrong with it and what to do.
        problem: String,
    },
    /// etcd failed or did not answer.
    #[error(transparent)]
    Etcd(#[from] crate::etcd::EtcdError),
    /// `registry.backend` is `etcd`, but the process has no etcd connection.
    #[error("registry.backend is etcd but no etcd connection was made")]
    NoEtcd,
    /// A stored instance record is not valid JSON.
    #[error("malformed registry entry: {0}")]
    Malformed(#[from] serde_json::Error),
}

/// Live instance set of one service; every change replaces the whole set.
pub type InstanceSet = Vec<ServiceInstance>;

/// A discovery backend.
#[async_trait]
pub trait Registry: Send + Sync + fmt::Debug {
    /// Registers `instance` and keeps it alive in the background until [`Registration::deregister`]
    /// (or drop). Re-registers by itself when the entry is lost.
    async fn register(&self, instance: ServiceInstance) -> Result<Registration, DiscoveryError>;

    /// Resolves `service` and keeps the returned set current until every receiver is dropped.
    /// The first value is the complete set at the time of the call.
    async fn subscribe(
        &self,
        service: &str,
    ) -> Result<watch::Receiver<InstanceSet>, DiscoveryError>;

    /// How long a registration may take to reach a subscription made earlier (the local
    /// registry's poll; an etcd watch's push). Until that long has passed, a subscription that
    /// shows no instance only says that none had registered a moment ago: a caller that finds
    /// none waits this long for one before it reports that none is registered.
    fn propagation_delay(&self) -> Duration;
}

/// Handle of a live registration; stops the keep-alive and removes the entry.
#[derive(Debug)]
pub struct Registration {
    instance: ServiceInstance,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Registration {
    /// Wraps the keep-alive task of a backend; the task must remove the entry when `stop` fires.
    pub fn new(instance: ServiceInstance, stop: CancellationToken, task: JoinHandle<()>) -> Self {
        Self {
            instance,
            stop,
            task: Some(task),
        }
    }

    /// The registered instance.
    pub fn instance(&self) -> &ServiceInstance {
        &self.instance
    }

    /// Removes the entry now and waits until it is gone.
    #[tracing::instrument(
        name = "registry.deregister",
        skip_all,
        fields(otel.name = "registry deregister", service = %self.instance.name)
    )]
    pub async fn deregister(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take()
            && let Err(error) = task.await
        {
            tracing::warn!(%error, "registration task ended abnormally");
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // Best effort when dropped without `deregister`: the task removes the entry on its own.
        self.stop.cancel();
    }
}

/// Notes that the registry confirmed `service`'s registration just now (a registration, a
/// refreshed entry or an answered lease keep-alive): the gauge
/// `shippy_registry_heartbeat_timestamp_seconds{service}` holds the Unix time of the last one, so
/// `time() - shippy_registry_heartbeat_timestamp_seconds` is the heartbeat's age, which grows past
/// the TTL only when the instance is about to drop out of discovery.
fn heartbeat_confirmed(service: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64());
    metrics::gauge!("shippy_registry_heartbeat_timestamp_seconds", "service" => service.to_owned())
        .set(now);
}

/// Counts a call in an in-flight gauge until dropped, however the call ends (a caller may drop
/// the call's future): the one guard of both the server's and the balanced channel's gauges.
pub(crate) struct InFlightGauge(metrics::Gauge);

impl InFlightGauge {
    /// Counts one call in `gauge` from now on.
    pub(crate) fn start(gauge: metrics::Gauge) -> Self {
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for InFlightGauge {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Checks that `name` is safe as a file name and an etcd key segment.
pub fn validate_name(name: &str) -> Result<(), DiscoveryError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(DiscoveryError::InvalidName(name.to_owned()))
    }
}

/// Opens the registry backend that `settings` select; the etcd backend uses the process's one
/// etcd connection, `etcd`.
pub fn open(
    settings: &RegistrySettings,
    etcd: Option<&crate::etcd::Etcd>,
) -> Result<Arc<dyn Registry>, DiscoveryError> {
    Ok(match settings.backend {
        RegistryBackend::Local => Arc::new(local::LocalRegistry::from_settings(settings)?),
        RegistryBackend::Etcd => Arc::new(etcd::EtcdRegistry::new(
            etcd.ok_or(DiscoveryError::NoEtcd)?.clone(),
            settings.ttl(),
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(validate_name("vessel").is_ok());
        assert!(validate_name("my-service_2").is_ok());
        for bad in ["", "../etc", "a/b", ".hidden", "sp ace"] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
    }
}
