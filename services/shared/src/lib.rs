//! What every shippy process shares: service discovery and balanced clients, typed settings, ports,
//! telemetry, health, and the serve/shutdown lifecycle.
//!
//! A service's `main` is: parse [`args::ServiceArgs`], load settings ([`settings`]), init
//! [`telemetry`], build the service on a [`lifecycle::ServiceHost`], serve until
//! [`lifecycle::shutdown_signal`].

pub mod args;
pub mod auth;
pub mod balance;
pub mod config_centre;
pub mod discovery;
pub mod health;
pub mod lifecycle;
pub mod mongo;
pub mod net;
pub mod ratelimit;
pub mod settings;
pub mod store;
pub mod telemetry;
pub mod upstream;
