//! System tests of shippy-rs live in `tests/` (one file per area) and `make bench` in
//! `examples/bench.rs`; this library is empty. The harness they use is `shippy-test-support`.
//!
//! - `tests/local_system.rs`: the whole story on the zero-dependency defaults.
//! - `tests/etcd_registry.rs`: discovery on a real etcd (1 or 3 members), failures included.
//! - `tests/config_centre.rs`: settings from etcd, live changes, bad documents.
//! - `tests/production_backends.rs`: etcd + MongoDB (FerretDB), restarts and outages.
//! - `tests/live_settings.rs`: two services in one process stay independent.
