//! Handles of the per-call metrics, made once and reused by every call.
//!
//! Why: `metrics::counter!(name, "label" => value, …)` builds its key on every use — the label
//! values cloned into a fresh vector, the whole key hashed and looked up in the recorder's
//! registry — and a `CreateConsignment` used a dozen of them between the server and client sides.
//! A handle is a shared atomic: recording through it is one atomic operation. The handles of one
//! call path are made on its first call; the labels that vary per call (the status code, an
//! attempt's outcome) have one lazily made handle per value.

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock, RwLock},
};

use metrics::Counter;
use tonic::Code;

/// Most distinct paths remembered: paths come from clients (an unknown method is still a path),
/// so the memory stays bounded; calls beyond it make their handles each time, as before.
const MAX_PATHS: usize = 256;

/// Handles per call path, made on first use.
#[derive(Debug)]
pub(crate) struct ByPath<T> {
    map: RwLock<HashMap<Box<str>, Arc<T>>>,
}

impl<T> Default for ByPath<T> {
    fn default() -> Self {
        Self {
            map: RwLock::new(HashMap::new()),
        }
    }
}

impl<T> ByPath<T> {
    /// The handles of `path`, made by `make` the first time.
    pub(crate) fn get(&self, path: &str, make: impl FnOnce() -> T) -> Arc<T> {
        if let Ok(map) = self.map.read()
            && let Some(found) = map.get(path)
        {
            return Arc::clone(found);
        }
        let made = Arc::new(make());
        if let Ok(mut map) = self.map.write()
            && map.len() < MAX_PATHS
        {
            return Arc::clone(map.entry(path.into()).or_insert(made));
        }
        made
    }
}

/// One counter per gRPC status code, each made when first needed (so codes that never happen
/// make no series).
#[derive(Debug, Default)]
pub(crate) struct PerCode {
    counters: [OnceLock<Counter>; 17],
}

impl PerCode {
    /// The counter of `code`, made by `make` the first time.
    pub(crate) fn get(&self, code: Code, make: impl FnOnce() -> Counter) -> &Counter {
        let index = usize::try_from(code as i32).unwrap_or(0).min(16);
        self.counters[index].get_or_init(make)
    }
}

/// One counter per value of a label with a fixed set of values, each made when first needed.
#[derive(Debug)]
pub(crate) struct PerValue<const N: usize> {
    values: [&'static str; N],
    counters: [OnceLock<Counter>; N],
}

impl<const N: usize> PerValue<N> {
    /// Counters for the label values `values`.
    pub(crate) fn new(values: [&'static str; N]) -> Self {
        Self {
            values,
            counters: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// The counter of `value` (one of the values given at construction), made by `make` the
    /// first time; `None` for a value that was not given.
    pub(crate) fn get(
        &self,
        value: &'static str,
        make: impl FnOnce(&'static str) -> Counter,
    ) -> Option<&Counter> {
        let index = self.values.iter().position(|v| *v == value)?;
        Some(self.counters[index].get_or_init(|| make(value)))
    }
}

/// Handles keyed by two static label values (such as a store operation and its outcome), made on
/// first use. The keys are a few fixed strings of the code, so the set stays small; a lookup is a
/// short scan under a read lock.
#[cfg(feature = "server")]
#[derive(Debug)]
pub(crate) struct ByStaticPair<T> {
    handles: RwLock<Vec<((&'static str, &'static str), T)>>,
}

#[cfg(feature = "server")]
impl<T> ByStaticPair<T> {
    /// An empty set (usable in a `static`).
    pub(crate) const fn new() -> Self {
        Self {
            handles: RwLock::new(Vec::new()),
        }
    }
}

#[cfg(feature = "server")]
impl<T: Clone> ByStaticPair<T> {
    /// The handle of `key`, made by `make` the first time.
    pub(crate) fn get(&self, key: (&'static str, &'static str), make: impl FnOnce() -> T) -> T {
        if let Ok(handles) = self.handles.read()
            && let Some((_, found)) = handles.iter().find(|(k, _)| *k == key)
        {
            return found.clone();
        }
        let made = make();
        if let Ok(mut handles) = self.handles.write()
            && !handles.iter().any(|(k, _)| *k == key)
        {
            handles.push((key, made.clone()));
        }
        made
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_made_once_per_path_and_value() {
        let paths: ByPath<usize> = ByPath::default();
        let mut made = 0;
        for _ in 0..3 {
            paths.get("/a.B/C", || {
                made += 1;
                made
            });
        }
        assert_eq!(made, 1);
        let values = PerValue::new(["ok", "failed"]);
        assert!(values.get("ok", |_| Counter::noop()).is_some());
        assert!(values.get("other", |_| Counter::noop()).is_none());
        let codes = PerCode::default();
        let _ = codes.get(Code::Unauthenticated, Counter::noop);
    }

    #[cfg(feature = "server")]
    #[test]
    fn handles_are_made_once_per_static_pair() {
        let pairs: ByStaticPair<usize> = ByStaticPair::new();
        let mut made = 0;
        for key in [("create", "ok"), ("create", "ok"), ("create", "internal")] {
            pairs.get(key, || {
                made += 1;
                made
            });
        }
        assert_eq!(made, 2, "one handle per pair");
        assert_eq!(pairs.get(("create", "ok"), || 99), 1);
    }

    #[test]
    fn the_number_of_remembered_paths_is_bounded() {
        let paths: ByPath<()> = ByPath::default();
        for i in 0..MAX_PATHS + 10 {
            paths.get(&format!("/p/{i}"), || ());
        }
        assert_eq!(paths.map.read().map(|m| m.len()).unwrap_or(0), MAX_PATHS);
    }
}
