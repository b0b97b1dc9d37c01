//! The etcd registry: leases and watches.
//!
//! Key layout: `/<prefix>/services/<name>/<instance-id>` → JSON [`ServiceInstance`], attached to a lease
//! of `registry.ttl_secs`. The failures peers' users keep reporting are handled here:
//! - the keep-alive stream dies, the lease expires, someone deletes the key, or etcd restarts (even with
//!   its data wiped): the owner notices (keep-alive answer with TTL 0, stream end or error, a delete on
//!   its own key) and grants a new lease and puts the key again, with jittered exponential backoff,
//!   forever, logging every step;
//! - watches break on reconnect and on compaction: [`mirror`] re-lists the prefix and re-creates the
//!   watch from the listed revision, so nothing is missed and a compacted revision cannot wedge it;
//! - while etcd is unreachable subscribers keep the last known instance set.

use std::{collections::BTreeMap, future::Future, time::Duration};

use async_trait::async_trait;
use etcd_client::{Client, ConnectOptions, EventType, GetOptions, PutOptions, WatchOptions};
use rand::Rng;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{DiscoveryError, InstanceSet, Registration, Registry, ServiceInstance, validate_name};
use crate::settings::EtcdSettings;

/// Backoff between reconnection attempts: exponential from this...
const BACKOFF_MIN: Duration = Duration::from_millis(200);
/// ...up to this, with full jitter so a fleet does not reconnect in lockstep after an outage.
const BACKOFF_MAX: Duration = Duration::from_secs(3);

/// Jittered exponential backoff.
#[derive(Debug, Default)]
pub struct Backoff {
    attempt: u32,
}

impl Backoff {
    /// The next delay: uniform in `[cap/2, cap]`, `cap` doubling from [`BACKOFF_MIN`] to [`BACKOFF_MAX`].
    pub fn next_delay(&mut self) -> Duration {
        let cap = BACKOFF_MIN
            .saturating_mul(1 << self.attempt.min(10))
            .min(BACKOFF_MAX);
        self.attempt = self.attempt.saturating_add(1);
        let half = cap / 2;
        half + half.mul_f64(rand::rng().random::<f64>())
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Connects an etcd client to every endpoint in `settings` (lazy: etcd may be down right now).
pub async fn client(settings: &EtcdSettings) -> Result<Client, DiscoveryError> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
        .with_timeout(Duration::from_millis(settings.request_timeout_ms))
        .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3))
        .with_keep_alive_while_idle(true);
    Ok(Client::connect(&settings.endpoints, Some(options)).await?)
}

/// Runs one etcd request with a deadline, retrying transport failures until then: with several
/// endpoints the client may hand a request to a member that is down, and another attempt goes
/// elsewhere.
async fn timed<T, F, Fut>(client: &Client, limit: Duration, request: F) -> Result<T, DiscoveryError>
where
    F: Fn(Client) -> Fut,
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    const PAUSE: Duration = Duration::from_millis(50);
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, request(client.clone())).await {
            Err(_) => return Err(DiscoveryError::EtcdTimeout(limit)),
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error))
                if retryable(&error) && tokio::time::Instant::now() + PAUSE < deadline =>
            {
                tracing::debug!(%error, "etcd request failed; retrying");
                tokio::time::sleep(PAUSE).await;
            }
            Ok(Err(error)) => return Err(error.into()),
        }
    }
}

/// Failures another attempt may not have: connection-level ones, not refusals.
fn retryable(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        etcd_client::Error::GRpcStatus(status) => {
            matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::Unknown
            )
        }
        _ => false,
    }
}

/// A local copy of every key under a prefix.
pub type KeyValues = BTreeMap<String, Vec<u8>>;

/// Lists `prefix` once, then keeps a copy of it current in the background until every receiver is
/// dropped; `project` turns the copy into what subscribers see (sent only when it changes).
/// Survives etcd restarts, compaction and outages (the last value stays while etcd is away).
pub async fn mirror<T, F>(
    client: Client,
    prefix: String,
    timeout: Duration,
    project: F,
) -> Result<watch::Receiver<T>, DiscoveryError>
where
    T: PartialEq + Send + Sync + 'static,
    F: Fn(&KeyValues) -> T + Send + 'static,
{
    let (mut kvs, mut revision) = list(&client, &prefix, timeout).await?;
    let (tx, rx) = watch::channel(project(&kvs));
    tokio::spawn(async move {
        let mut backoff = Backoff::default();
        let mut first = true;
        loop {
            if !first {
                // Re-list: covers events missed while disconnected, compaction, and a wiped cluster.
                tokio::select! {
                    () = tx.closed() => return,
                    listed = list(&client, &prefix, timeout) => match listed {
                        Ok((fresh, rev)) => {
                            kvs = fresh;
                            revision = rev;
                            publish(&tx, project(&kvs));
                        }
                        Err(error) => {
                            tracing::warn!(%prefix, %error, "etcd unreachable; keeping the last known state");
                            tokio::time::sleep(backoff.next_delay()).await;
                            continue;
                        }
                    },
                }
            }
            first = false;
            let options = WatchOptions::new()
                .with_prefix()
                .with_start_revision(revision + 1);
            let watched = timed(&client, timeout, |mut c| {
                let (prefix, options) = (prefix.clone(), options.clone());
                async move { c.watch(prefix, Some(options)).await }
            });
            let mut stream = match watched.await {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::warn!(%prefix, %error, "cannot watch etcd; retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            };
            tracing::debug!(%prefix, from = revision + 1, "watching");
            loop {
                let message = tokio::select! {
                    () = tx.closed() => return,
                    message = stream.message() => message,
                };
                match message {
                    Ok(Some(response))
                        if response.canceled() || response.compact_revision() > 0 =>
                    {
                        tracing::warn!(%prefix, compacted = response.compact_revision(), reason = response.cancel_reason(), "watch cancelled by etcd; re-listing");
                        break;
                    }
                    Ok(Some(response)) => {
                        backoff.reset();
                        for event in response.events() {
                            let Some(kv) = event.kv() else { continue };
                            let key = String::from_utf8_lossy(kv.key()).into_owned();
                            match event.event_type() {
                                EventType::Put => kvs.insert(key, kv.value().to_vec()),
                                EventType::Delete => kvs.remove(&key),
                            };
                            revision = revision.max(kv.mod_revision());
                        }
                        publish(&tx, project(&kvs));
                    }
                    Ok(None) => {
                        tracing::warn!(%prefix, "etcd watch stream ended; re-creating it");
                        break;
                    }
                    Err(error) => {
                        tracing::warn!(%prefix, %error, "etcd watch failed; re-creating it");
                        break;
                    }
                }
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    });
    Ok(rx)
}

fn publish<T: PartialEq>(tx: &watch::Sender<T>, value: T) {
    tx.send_if_modified(|current| {
        if *current == value {
            false
        } else {
            *current = value;
            true
        }
    });
}

async fn list(
    client: &Client,
    prefix: &str,
    timeout: Duration,
) -> Result<(KeyValues, i64), DiscoveryError> {
    let response = timed(client, timeout, |mut c| async move {
        c.get(prefix, Some(GetOptions::new().with_prefix())).await
    })
    .await?;
    let revision = response.header().map_or(0, |h| h.revision());
    let kvs = response
        .kvs()
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                kv.value().to_vec(),
            )
        })
        .collect();
    Ok((kvs, revision))
}

/// Registry on etcd leases and watches.
#[derive(Clone)]
pub struct EtcdRegistry {
    client: Client,
    prefix: String,
    ttl: Duration,
    timeout: Duration,
}

impl std::fmt::Debug for EtcdRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdRegistry")
            .field("prefix", &self.prefix)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl EtcdRegistry {
    /// A registry on the cluster in `settings`, registering with leases of `ttl`.
    pub async fn connect(settings: &EtcdSettings, ttl: Duration) -> Result<Self, DiscoveryError> {
        Ok(Self {
            client: client(settings).await?,
            prefix: settings.prefix.trim_matches('/').to_owned(),
            ttl,
            timeout: Duration::from_millis(settings.request_timeout_ms.max(1)),
        })
    }

    /// `/<prefix>/services/<name>/`.
    pub fn service_prefix(&self, name: &str) -> String {
        format!("/{}/services/{name}/", self.prefix)
    }

    /// Grants a lease and puts the instance key on it; returns the lease id and the revision of the
    /// put.
    async fn put_instance(&self, key: &str, value: &str) -> Result<(i64, i64), DiscoveryError> {
        let ttl = i64::try_from(self.ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let lease = timed(&self.client, self.timeout, |mut c| async move {
            c.lease_grant(ttl, None).await
        })
        .await?
        .id();
        let put = timed(&self.client, self.timeout, |mut c| async move {
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
        key: &str,
        lease: i64,
        put_revision: i64,
        stop: &CancellationToken,
    ) -> Option<String> {
        let kept = timed(&self.client, self.timeout, |mut c| async move {
            c.lease_keep_alive(lease).await
        });
        let (mut keeper, mut answers) = match kept.await {
            Ok(pair) => pair,
            Err(error) => return Some(format!("cannot open keep-alive stream: {error}")),
        };
        let from = WatchOptions::new().with_start_revision(put_revision + 1);
        let watched = timed(&self.client, self.timeout, |mut c| {
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
                    Ok(Some(_)) => {}
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
    async fn register(&self, instance: ServiceInstance) -> Result<Registration, DiscoveryError> {
        validate_name(&instance.name)?;
        let key = format!("{}{}", self.service_prefix(&instance.name), instance.id);
        let value = serde_json::to_string(&instance)?;
        // The first registration must work, so a misconfigured endpoint fails start-up loudly.
        let first = self.put_instance(&key, &value).await?;
        tracing::info!(%key, lease = first.0, ttl = ?self.ttl, "registered (etcd)");

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
                        None => match registry.put_instance(&key, &value).await {
                            Ok(fresh) => {
                                tracing::info!(%key, lease = fresh.0, "re-registered (etcd)");
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
                    match registry.keep_alive(&key, current.0, current.1, &stop).await {
                        None => break,
                        Some(reason) => {
                            let delay = backoff.next_delay();
                            tracing::warn!(%key, lease = current.0, %reason, retry_in = ?delay, "registration lost; re-registering");
                            lease = None;
                            tokio::select! {
                                () = stop.cancelled() => break,
                                () = tokio::time::sleep(delay) => {}
                            }
                        }
                    }
                }
                // Deregister: revoking the lease deletes the key; delete it too in case the lease is gone.
                let client = &registry.client;
                if let Some((current, _)) = lease {
                    let _ = timed(client, registry.timeout, |mut c| async move {
                        c.lease_revoke(current).await
                    })
                    .await;
                }
                let key = key.as_str();
                match timed(client, registry.timeout, |mut c| async move {
                    c.delete(key, None).await
                })
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
        mirror(
            self.client.clone(),
            self.service_prefix(service),
            self.timeout,
            |kvs| {
                let mut set: InstanceSet = kvs
                    .iter()
                    .filter_map(|(key, value)| {
                        match serde_json::from_slice::<ServiceInstance>(value) {
                            Ok(instance) => Some(instance),
                            Err(error) => {
                                tracing::warn!(%key, %error, "ignoring malformed registry entry");
                                None
                            }
                        }
                    })
                    .collect();
                set.sort_by(|a, b| a.id.cmp(&b.id));
                set
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let mut backoff = Backoff::default();
        let first = backoff.next_delay();
        assert!(
            first >= BACKOFF_MIN / 2 && first <= BACKOFF_MIN,
            "{first:?}"
        );
        for _ in 0..20 {
            let delay = backoff.next_delay();
            assert!(delay <= BACKOFF_MAX, "{delay:?}");
        }
        assert!(backoff.next_delay() >= BACKOFF_MAX / 2);
        backoff.reset();
        assert!(backoff.next_delay() <= BACKOFF_MIN);
    }
}
