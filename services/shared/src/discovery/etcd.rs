//! etcd registry (work in progress in this commit series).

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use super::{DiscoveryError, InstanceSet, Registration, Registry, ServiceInstance};
use crate::settings::EtcdSettings;

/// Registry on etcd leases and watches.
#[derive(Debug)]
pub struct EtcdRegistry {
    _ttl: Duration,
}

impl EtcdRegistry {
    /// Connects to the cluster.
    pub async fn connect(_settings: &EtcdSettings, ttl: Duration) -> Result<Self, DiscoveryError> {
        Err(DiscoveryError::EtcdTimeout(ttl))
    }
}

#[async_trait]
impl Registry for EtcdRegistry {
    async fn register(&self, _instance: ServiceInstance) -> Result<Registration, DiscoveryError> {
        Err(DiscoveryError::EtcdTimeout(self._ttl))
    }
    async fn subscribe(
        &self,
        _service: &str,
    ) -> Result<watch::Receiver<InstanceSet>, DiscoveryError> {
        Err(DiscoveryError::EtcdTimeout(self._ttl))
    }
}
