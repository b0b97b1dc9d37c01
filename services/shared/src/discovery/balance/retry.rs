//! Which calls may be retried, and how many retries a channel may spend.
//!
//! - **Idempotent calls** are those whose proto method says `option idempotency_level =
//!   NO_SIDE_EFFECTS` (or `IDEMPOTENT`), read once from the descriptor set the proto crate
//!   embeds: annotating a new read-only RPC makes it retryable with no code here. Only these are
//!   retried after they may have reached a server (an `UNAVAILABLE` answer, a broken connection,
//!   an attempt that timed out); any call is retried when its connection could not even be
//!   opened, since then no server saw it.
//! - **Calls that carry an idempotency key**, to a method that honours one
//!   ([`shippy_proto::idempotency`]), are idempotent too: the service answers a repeat with what
//!   the first attempt did. A key sent to another method means nothing, so it changes nothing.
//! - **The budget** is tower's `TpsBudget`: retries may add `client.retry_budget_percent` of the
//!   calls of the last 10 s plus `client.retry_min_per_second`, so when a whole service is down,
//!   retries add a bounded share of load instead of multiplying it. It follows the live settings.

use std::{
    collections::HashSet,
    sync::{Arc, LazyLock, Mutex},
    time::Duration,
};

use prost::Message as _;
use prost_types::{FileDescriptorSet, method_options::IdempotencyLevel};
use shippy_proto::idempotency;
use tower::retry::budget::{Budget as _, TpsBudget};

use crate::config::ClientSettings;

/// How far back the budget looks.
const BUDGET_WINDOW: Duration = Duration::from_secs(10);

/// `/package.Service/Method` of every method marked free of side effects or idempotent.
static IDEMPOTENT: LazyLock<HashSet<String>> =
    LazyLock::new(|| idempotent_methods(shippy_proto::FILE_DESCRIPTOR_SET));

/// Whether the call to `path` (`/package.Service/Method`) with `headers` (its metadata) may be
/// sent again after it may have reached a server.
pub(super) fn is_idempotent(path: &str, headers: &http::HeaderMap) -> bool {
    IDEMPOTENT.contains(path)
        || (idempotency::honours_key(path) && headers.contains_key(idempotency::METADATA_KEY))
}

fn idempotent_methods(encoded: &[u8]) -> HashSet<String> {
    let Ok(set) = FileDescriptorSet::decode(encoded) else {
        tracing::warn!("the proto descriptors do not decode; no call will be retried");
        return HashSet::new();
    };
    let mut paths = HashSet::new();
    for file in &set.file {
        for service in &file.service {
            for method in &service.method {
                let level = method
                    .options
                    .as_ref()
                    .map_or(IdempotencyLevel::IdempotencyUnknown, |o| {
                        o.idempotency_level()
                    });
                if matches!(
                    level,
                    IdempotencyLevel::NoSideEffects | IdempotencyLevel::Idempotent
                ) {
                    paths.insert(format!(
                        "/{}.{}/{}",
                        file.package(),
                        service.name(),
                        method.name()
                    ));
                }
            }
        }
    }
    paths
}

/// The most retries per second `client.retry_min_per_second` can allow; more is taken as this.
const MAX_MIN_PER_SECOND: u32 = 1_000_000;

/// The settings a budget was made from: (percent, minimum per second).
type BudgetKey = (u32, u32);

/// A retry budget that follows the live settings (a change starts a fresh budget).
#[derive(Debug, Default)]
pub(super) struct RetryBudget {
    current: Mutex<Option<(BudgetKey, Arc<TpsBudget>)>>,
}

impl RetryBudget {
    fn budget(&self, settings: &ClientSettings) -> Option<Arc<TpsBudget>> {
        let key = (settings.retry_budget_percent, settings.retry_min_per_second);
        let mut current = self.current.lock().ok()?;
        match current.as_ref() {
            Some((had, budget)) if *had == key => Some(Arc::clone(budget)),
            _ => {
                // Clamped to what tower's budget accepts (it panics past them): any `u32` is a
                // valid setting, and a panic here would poison the lock and end retries for good.
                let budget = Arc::new(TpsBudget::new(
                    BUDGET_WINDOW,
                    key.1.min(MAX_MIN_PER_SECOND),
                    (key.0 as f32 / 100.0).min(1000.0),
                ));
                *current = Some((key, Arc::clone(&budget)));
                Some(budget)
            }
        }
    }

    /// Counts one call (every call earns a share of a retry).
    pub(super) fn deposit(&self, settings: &ClientSettings) {
        if let Some(budget) = self.budget(settings) {
            budget.deposit();
        }
    }

    /// Takes one retry from the budget; `false` when it is spent.
    pub(super) fn withdraw(&self, settings: &ClientSettings) -> bool {
        self.budget(settings)
            .is_some_and(|budget| budget.withdraw())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_retryable_and_writes_are_not() {
        for path in [
            "/shippy.vessel.v1.VesselService/FindAvailable",
            "/shippy.vessel.v1.VesselService/GetVessels",
            "/shippy.user.v1.UserService/ValidateToken",
            "/shippy.consignment.v1.ShippingService/GetConsignments",
        ] {
            assert!(is_idempotent(path, &http::HeaderMap::new()), "{path}");
        }
        for path in [
            "/shippy.consignment.v1.ShippingService/CreateConsignment",
            "/shippy.vessel.v1.VesselService/Create",
            "/shippy.user.v1.UserService/Create",
            "/shippy.user.v1.UserService/Auth",
            "/unknown.Service/Method",
        ] {
            assert!(!is_idempotent(path, &http::HeaderMap::new()), "{path}");
        }
        let mut keyed = http::HeaderMap::new();
        keyed.insert(
            idempotency::METADATA_KEY,
            http::HeaderValue::from_static("k-1"),
        );
        for path in [
            "/shippy.consignment.v1.ShippingService/CreateConsignment",
            "/shippy.vessel.v1.VesselService/Create",
        ] {
            assert!(is_idempotent(path, &keyed), "{path}");
        }
        // A key means nothing to a call that does not honour one.
        assert!(!is_idempotent("/shippy.user.v1.UserService/Create", &keyed));
    }

    #[tokio::test]
    async fn the_budget_bounds_retries_to_a_share_of_calls() {
        let settings = ClientSettings {
            retry_budget_percent: 10,
            retry_min_per_second: 0,
            ..ClientSettings::default()
        };
        let budget = RetryBudget::default();
        for _ in 0..100 {
            budget.deposit(&settings);
        }
        let retries = (0..100).filter(|_| budget.withdraw(&settings)).count();
        assert!((9..=11).contains(&retries), "10 % of 100 calls: {retries}");
        // A change of settings starts afresh.
        let generous = ClientSettings {
            retry_min_per_second: 1_000,
            ..settings
        };
        assert!(budget.withdraw(&generous));
    }

    #[tokio::test]
    async fn any_setting_makes_a_budget() {
        let budget = RetryBudget::default();
        for (percent, min_per_second) in [(u32::MAX, u32::MAX), (0, i32::MAX as u32), (0, 0)] {
            let settings = ClientSettings {
                retry_budget_percent: percent,
                retry_min_per_second: min_per_second,
                ..ClientSettings::default()
            };
            budget.deposit(&settings);
            let _ = budget.withdraw(&settings);
            assert!(
                budget.budget(&settings).is_some(),
                "{percent} {min_per_second}"
            );
        }
    }
}
