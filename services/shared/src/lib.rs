//! What every shippy process shares, in modules that depend one way (each only on those above it):
//!
//! | module | what | feature |
//! |---|---|---|
//! | [`catalog`] | the one table of services (name, gRPC service, binary, port) | |
//! | [`validate`] | field validation with errors that name the field | |
//! | [`idempotency`] | idempotency keys: checked, read from a call's metadata | |
//! | [`page`] | paging of list calls: page size, tokens, byte budget | |
//! | `call_metrics` | per-call metric handles, made once and reused | |
//! | `write_shaping` | sockets whose HTTP/2 writes leave in fewer, fuller pieces (servers and balanced clients) | |
//! | [`config`] | typed, layered settings; live settings as watch channels | |
//! | [`etcd`] | the process's one etcd connection | |
//! | [`centre`] | the etcd config centre | |
//! | [`discovery`] | registries (local files, etcd), the balanced channel, request ids and trace context | |
//! | [`probe`] | the gRPC health client | |
//! | `store` | store errors, the MongoDB and SQLite plumbing | `server` |
//! | `status` | how foreign errors become a client's `Status` | `server` |
//! | `auth` | bearer-token checks of incoming calls | `server` |
//! | `runtime` | the service skeleton: `Service`, `main`, host, the server layers (trace, rate limit, codec errors), connection bounds, admin port (metrics, probes), telemetry | `server` |
//!
//! The CLI uses the crate without the `server` feature, so it links neither MongoDB nor the server
//! stack. `docs/ARCHITECTURE.md` has the picture.

mod call_metrics;
pub mod catalog;
pub mod centre;
pub mod config;
pub mod discovery;
pub mod etcd;
pub mod idempotency;
pub mod page;
pub mod probe;
pub mod validate;
mod write_shaping;

#[cfg(feature = "server")]
pub mod auth;
#[cfg(feature = "server")]
pub mod runtime;
#[cfg(feature = "server")]
pub mod status;
#[cfg(feature = "server")]
pub mod store;
