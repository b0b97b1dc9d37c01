//! The etcd registry: leases and watches.
//!
//! Key layout: `/<prefix>/services/<name>/<instance-id>` → JSON [`ServiceInstance`], attached to a lease
//! of `registry.ttl_secs`. The failures peers' users keep reporting are handled here:
//! - the keep-alive stream dies, the lease expires, someone deletes the key, or etcd restarts (even with
//!   its data wiped): the owner notices (keep-alive answer with TTL 0, stream end or error, a delete on
//!   its own key) and grants a new lease and puts the key again, with jittered exponential backoff,
//!   forever, logging every step;
//! - watches break on reconnect and on compaction: [`crate::etcd::mirror`] re-lists the prefix and
//!   re-creates the watch from the listed revision, so nothing is missed and a compacted revision
//!   cannot wedge it;
//! - while etcd is unreachable subscribers keep the last known instance set.

use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{EventType, PutOptions, WatchOptions};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::{DiscoveryError, InstanceSet, Registration, Registry, ServiceInstance, validate_name};
use crate::etcd::{Backoff, Etcd, mirror};

/// Registry on etcd leases and watches.
#[derive(Clone)]
pub struct EtcdRegistry {
    etcd: Etcd,
    ttl: Duration,
}

impl std::fmt::Debug for EtcdRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdRegistry")
            .field("etcd", &self.etcd)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl EtcdRegistry {
    /// A registry on the process's etcd connection, registering with leases of `ttl`.
    pub fn new(etcd: Etcd, ttl: Duration) -> Self {
        Self { etcd, ttl }
    }

    /// `/<prefix>/services/<name>/`.
    pub fn service_prefix(&self, name: &str) -> String {
        self.etcd.key(&format!("services/{name}/"))
    }

    /// Grants a lease and puts the instance key on it; returns the lease id and the revision of the
    /// put.
    async fn put_instance(&self, key: &str, value: &str) -> Result<(i64, i64), DiscoveryError> {
        let ttl = i64::try_from(self.ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let lease = self
            .etcd
            .request(|mut c| async move { c.lease_grant(ttl, None).await })
            .await?
            .id();
        let put = self
            .etcd
            .request(|mut c| async move {
                c.put(key, value, Some(PutOptions::new().with_lease(lease)))
                    .await
            })
            .await?;
        Ok((lease, put.header().map_or(0, |h| h.revision())))
    }

    /// Keeps lease `lease` alive until it is lost (returns why) or `stop` fires (returns `None`).
    /// `put_revision` is the revision of our put: the watch on our own key starts right after it, so
    /// a delete that lands before the watch is set up is still seen.
    async fn keep_alive(
        &self,
        service: &str,
        key: &str,
        lease: i64,
        put_revision: i64,
        stop: &CancellationToken,
    ) -> Option<String> {
        let kept = self
            .etcd
            .request(|mut c| async move { c.lease_keep_alive(lease).await });
        let (mut keeper, mut answers) = match kept.await {
            Ok(pair) => pair,
            Err(error) => return Some(format!("cannot open keep-alive stream: {error}")),
        };
        let from = WatchOptions::new().with_start_revision(put_revision + 1);
        let watched = self.etcd.request(|mut c| {
            let from = from.clone();
            async move { c.watch(key, Some(from)).await }
        });
        let mut own_key = match watched.await {
            Ok(stream) => stream,
            Err(error) => return Some(format!("cannot watch own key: {error}")),
        };
        let mut tick = tokio::time::interval((self.ttl / 3).max(Duration::from_millis(300)));
        loop {
            tokio::select! {
                () = stop.cancelled() => return None,
                _ = tick.tick() => {
                    if let Err(error) = keeper.keep_alive().await {
                        return Some(format!("keep-alive failed: {error}"));
                    }
                }
                answer = answers.message() => match answer {
                    Ok(Some(answer)) if answer.ttl() <= 0 => return Some("lease expired".into()),
                    Ok(Some(_)) => super::heartbeat_confirmed(service),
                    Ok(None) => return Some("keep-alive stream ended".into()),
                    Err(error) => return Some(format!("keep-alive stream failed: {error}")),
                },
                event = own_key.message() => match event {
                    Ok(Some(response)) if response.events().iter().any(|e| e.event_type() == EventType::Delete) => {
                        return Some("registration key was deleted".into());
                    }
                    Ok(Some(response)) if response.canceled() => return Some("watch on own key cancelled".into()),
                    Ok(Some(_)) => {}
                    Ok(None) => return Some("watch on own key ended".into()),
                    Err(error) => return Some(format!("watch on own key failed: {error}")),
                },
            }
        }
    }
}

#[async_trait]
impl Registry for EtcdRegistry {
    #[tracing::instrument(
        name = "registry.register",
        skip_all,
        fields(otel.name = "registry register", registry = "etcd", service = %instance.name)
    )]
    async fn register(&self, instance: ServiceInstance) -> Result<Registration, DiscoveryError> {
        validate_name(&instance.name)?;
        let key = format!("{}{}", self.service_prefix(&instance.name), instance.id);
        let value = serde_json::to_string(&instance)?;
        // The first registration must work, so a misconfigured endpoint fails start-up loudly.
        let first = self.put_instance(&key, &value).await?;
        tracing::info!(%key, lease = first.0, ttl = ?self.ttl, "registered (etcd)");
        super::heartbeat_confirmed(&instance.name);
        let service = instance.name.clone();
        // Whether the registration is in etcd now: the host sets it when serving starts and ends;
        // here it follows a lost and re-made registration in between.
        let registered =
            metrics::gauge!("shippy_registry_registered", "service" => service.clone());

        let stop = CancellationToken::new();
        let registry = self.clone();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                // (lease id, revision of our put) of the live registration, if any.
                let mut lease = Some(first);
                let mut backoff = Backoff::default();
                loop {
                    let current = match lease {
                        Some(current) => current,
                        None => match registry
                            .put_instance(&key, &value)
                            .instrument(tracing::info_span!(
                                "registry.register",
                                otel.name = "registry re-register",
                                registry = "etcd",
                                %key
                            ))
                            .await
                        {
                            Ok(fresh) => {
                                tracing::info!(%key, lease = fresh.0, "re-registered (etcd)");
                                registered.set(1.0);
                                super::heartbeat_confirmed(&service);
                                backoff.reset();
                                lease = Some(fresh);
                                fresh
                            }
                            Err(error) => {
                                let delay = backoff.next_delay();
                                tracing::warn!(%key, %error, retry_in = ?delay, "re-registration failed");
                                tokio::select! {
                                    () = stop.cancelled() => break,
                                    () = tokio::time::sleep(delay) => continue,
                                }
                            }
                        },
                    };
                    match registry
                        .keep_alive(&service, &key, current.0, current.1, &stop)
                        .await
                    {
                        None => break,
                        Some(reason) => {
                            let delay = backoff.next_delay();
                            tracing::warn!(%key, lease = current.0, %reason, retry_in = ?delay, "registration lost; re-registering");
                            registered.set(0.0);
                            lease = None;
                            tokio::select! {
                                () = stop.cancelled() => break,
                                () = tokio::time::sleep(delay) => {}
                            }
                        }
                    }
                }
                // Deregister: revoking the lease deletes the key; delete it too in case the lease is gone.
                let etcd = &registry.etcd;
                if let Some((current, _)) = lease {
                    let _ = etcd
                        .request(|mut c| async move { c.lease_revoke(current).await })
                        .await;
                }
                let key = key.as_str();
                match etcd
                    .request(|mut c| async move { c.delete(key, None).await })
                    .await
                {
                    Ok(_) => tracing::info!(%key, "deregistered (etcd)"),
                    Err(error) => {
                        tracing::warn!(%key, %error, "could not delete registration; it expires with its lease")
                    }
                }
            }
        });
        Ok(Registration::new(instance, stop, task))
    }

    async fn subscribe(
        &self,
        service: &str,
    ) -> Result<watch::Receiver<InstanceSet>, DiscoveryError> {
        validate_name(service)?;
        let set = mirror(self.etcd.clone(), self.service_prefix(service), |kvs| {
            let mut set: InstanceSet = kvs
                .iter()
                .filter_map(
                    |(key, value)| match serde_json::from_slice::<ServiceInstance>(value) {
                        Ok(instance) => Some(instance),
                        Err(error) => {
                            tracing::warn!(%key, %error, "ignoring malformed registry entry");
                            None
                        }
                    },
                )
                .collect();
            set.sort_by(|a, b| a.id.cmp(&b.id));
            set
        })
        .await?;
        Ok(set)
    }

    fn propagation_delay(&self) -> Duration {
        // The watch pushes each change as etcd commits it: milliseconds on a working network;
        // this leaves room for a loaded machine.
        Duration::from_millis(100)
    }
}
