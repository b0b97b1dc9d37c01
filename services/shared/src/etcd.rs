//! One etcd connection per process, shared by the etcd registry and the config centre (both above
//! this module): requests with deadlines that retry transport failures, and
//! [`mirror`], a local copy of a key prefix that survives etcd restarts, compaction and outages.

use std::{collections::BTreeMap, future::Future, time::Duration};

use etcd_client::{Client, ConnectOptions, EventType, GetOptions, WatchOptions};
use rand::Rng;
use tokio::sync::watch;

use crate::config::{CommonSettings, EtcdSettings, RegistryBackend};

/// Why an etcd request failed. The text names the endpoints tried and says what to check; the
/// client's own (long, debug-formatted) error is reduced to its message.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// No member could be reached.
    #[error(
        "etcd at {endpoints} is not answering ({reason}); is etcd running? check etcd.endpoints \
         (SHIPPY_ETCD__ENDPOINTS)"
    )]
    Unreachable {
        /// The endpoints tried.
        endpoints: String,
        /// What the client saw, in a few words.
        reason: String,
    },
    /// etcd answered, and refused the request.
    #[error("etcd at {endpoints} refused the request: {reason}")]
    Refused {
        /// The endpoints tried.
        endpoints: String,
        /// etcd's message.
        reason: String,
    },
    /// A timeout of the `etcd` settings is 0, which would fail every request at once.
    #[error("{key} must be more than 0 ({env})")]
    ZeroTimeout {
        /// The setting.
        key: &'static str,
        /// Its environment variable.
        env: &'static str,
    },
    /// etcd did not answer in time.
    #[error(
        "etcd at {endpoints} did not answer within {limit:?}; is etcd running? check \
         etcd.endpoints (SHIPPY_ETCD__ENDPOINTS)"
    )]
    Timeout {
        /// The endpoints tried.
        endpoints: String,
        /// The deadline.
        limit: Duration,
    },
}

impl EtcdError {
    /// Classifies an error of the etcd client: connection-level failures are
    /// [`EtcdError::Unreachable`], answers are [`EtcdError::Refused`].
    fn from_client(endpoints: &str, error: &etcd_client::Error) -> Self {
        let endpoints = endpoints.to_owned();
        match error {
            etcd_client::Error::GRpcStatus(status) if retryable(error) => Self::Unreachable {
                endpoints,
                reason: status.message().to_owned(),
            },
            etcd_client::Error::TransportError(_) => Self::Unreachable {
                endpoints,
                reason: "cannot connect".to_owned(),
            },
            etcd_client::Error::IoError(io) => Self::Unreachable {
                endpoints,
                reason: io.to_string(),
            },
            etcd_client::Error::GRpcStatus(status) => Self::Refused {
                endpoints,
                reason: status.message().to_owned(),
            },
            other => Self::Refused {
                endpoints,
                reason: other.to_string(),
            },
        }
    }
}

/// A lazily connected etcd client: etcd may be down when it is made. Clones share the connection.
#[derive(Clone)]
pub struct Etcd {
    client: Client,
    prefix: String,
    endpoints: String,
    timeout: Duration,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Etcd {
    /// A client of every endpoint in `settings`; connects on first use.
    pub async fn connect(settings: &EtcdSettings) -> Result<Self, EtcdError> {
        // Elsewhere a 0 timeout means "none"; etcd's client takes it literally and gives up on
        // every request before sending it, with an error that blames etcd.
        if settings.connect_timeout_ms == 0 {
            return Err(EtcdError::ZeroTimeout {
                key: "etcd.connect_timeout_ms",
                env: "SHIPPY_ETCD__CONNECT_TIMEOUT_MS",
            });
        }
        if settings.request_timeout_ms == 0 {
            return Err(EtcdError::ZeroTimeout {
                key: "etcd.request_timeout_ms",
                env: "SHIPPY_ETCD__REQUEST_TIMEOUT_MS",
            });
        }
        let endpoints = settings.endpoints.join(",");
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
            .with_timeout(Duration::from_millis(settings.request_timeout_ms))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3))
            .with_keep_alive_while_idle(true);
        let client = Client::connect(&settings.endpoints, Some(options))
            .await
            .map_err(|error| EtcdError::from_client(&endpoints, &error))?;
        Ok(Self {
            client,
            prefix: settings.prefix.trim_matches('/').to_owned(),
            endpoints,
            timeout: Duration::from_millis(settings.request_timeout_ms.max(1)),
        })
    }

    /// The process's connection when `settings` need one (the etcd registry or the config centre),
    /// else `None`.
    pub async fn when_needed(settings: &CommonSettings) -> Result<Option<Self>, EtcdError> {
        let needed =
            settings.registry.backend == RegistryBackend::Etcd || settings.config_centre.enabled;
        if needed {
            Ok(Some(Self::connect(&settings.etcd).await?))
        } else {
            Ok(None)
        }
    }

    /// `/<prefix>/<rest>`: every key shippy writes is under the configured prefix.
    pub fn key(&self, rest: &str) -> String {
        format!("/{}/{rest}", self.prefix)
    }

    /// The deadline of one request.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs one request with the configured deadline, retrying transport failures until then: with
    /// several endpoints the client may hand a request to a member that is down, and another attempt
    /// goes elsewhere.
    pub async fn request<T, F, Fut>(&self, request: F) -> Result<T, EtcdError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        const PAUSE: Duration = Duration::from_millis(50);
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            match tokio::time::timeout_at(deadline, request(self.client.clone())).await {
                Err(_) => {
                    return Err(EtcdError::Timeout {
                        endpoints: self.endpoints.clone(),
                        limit: self.timeout,
                    });
                }
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(error))
                    if retryable(&error) && tokio::time::Instant::now() + PAUSE < deadline =>
                {
                    tracing::debug!(%error, "etcd request failed; retrying");
                    tokio::time::sleep(PAUSE).await;
                }
                Ok(Err(error)) => return Err(EtcdError::from_client(&self.endpoints, &error)),
            }
        }
    }
}

/// Backoff between reconnection attempts: exponential from this...
const BACKOFF_MIN: Duration = Duration::from_millis(200);
/// ...up to this, with full jitter so a fleet does not reconnect in lockstep after an outage.
const BACKOFF_MAX: Duration = Duration::from_secs(3);

/// Jittered exponential backoff.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    attempt: u32,
}

impl Backoff {
    /// The next delay: uniform in `[cap/2, cap]`, `cap` doubling from [`BACKOFF_MIN`] to [`BACKOFF_MAX`].
    pub(crate) fn next_delay(&mut self) -> Duration {
        let cap = BACKOFF_MIN
            .saturating_mul(1 << self.attempt.min(10))
            .min(BACKOFF_MAX);
        self.attempt = self.attempt.saturating_add(1);
        let half = cap / 2;
        half + half.mul_f64(rand::rng().random::<f64>())
    }

    /// Starts over after a success.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
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
pub(crate) type KeyValues = BTreeMap<String, Vec<u8>>;

/// Lists `prefix` once, then keeps a copy of it current in the background until every receiver is
/// dropped; `project` turns the copy into what subscribers see (sent only when it changes).
/// Survives etcd restarts, compaction and outages (the last value stays while etcd is away).
pub(crate) async fn mirror<T, F>(
    etcd: Etcd,
    prefix: String,
    project: F,
) -> Result<watch::Receiver<T>, EtcdError>
where
    T: PartialEq + Send + Sync + 'static,
    F: Fn(&KeyValues) -> T + Send + 'static,
{
    let (mut kvs, mut revision) = list(&etcd, &prefix).await?;
    let (tx, rx) = watch::channel(project(&kvs));
    tokio::spawn(async move {
        let mut backoff = Backoff::default();
        let mut first = true;
        loop {
            if !first {
                // Re-list: covers events missed while disconnected, compaction, and a wiped cluster.
                tokio::select! {
                    () = tx.closed() => return,
                    listed = list(&etcd, &prefix) => match listed {
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
            let watched = etcd.request(|mut c| {
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

async fn list(etcd: &Etcd, prefix: &str) -> Result<(KeyValues, i64), EtcdError> {
    let response = etcd
        .request(|mut c| async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_zero_timeout_is_refused_naming_the_setting() {
        for (connect_timeout_ms, request_timeout_ms, named) in [
            (
                0,
                3_000,
                "etcd.connect_timeout_ms must be more than 0 (SHIPPY_ETCD__CONNECT_TIMEOUT_MS)",
            ),
            (
                2_000,
                0,
                "etcd.request_timeout_ms must be more than 0 (SHIPPY_ETCD__REQUEST_TIMEOUT_MS)",
            ),
        ] {
            let settings = EtcdSettings {
                connect_timeout_ms,
                request_timeout_ms,
                ..EtcdSettings::default()
            };
            let refused = Etcd::connect(&settings).await.expect_err("refused");
            assert_eq!(refused.to_string(), named);
        }
    }

    #[test]
    fn client_errors_become_one_sentence_naming_the_endpoints() {
        let refused =
            etcd_client::Error::GRpcStatus(tonic::Status::unavailable("tcp connect error"));
        let text = EtcdError::from_client("http://127.0.0.1:1", &refused).to_string();
        assert_eq!(
            text,
            "etcd at http://127.0.0.1:1 is not answering (tcp connect error); is etcd running? \
             check etcd.endpoints (SHIPPY_ETCD__ENDPOINTS)"
        );
        let denied = etcd_client::Error::GRpcStatus(tonic::Status::permission_denied(
            "etcdserver: permission denied",
        ));
        assert_eq!(
            EtcdError::from_client("h:1", &denied).to_string(),
            "etcd at h:1 refused the request: etcdserver: permission denied"
        );
    }

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
