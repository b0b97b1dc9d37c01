//! The REST gateway's settings: the shared part plus `gateway.*`.

use serde::{Deserialize, Serialize};

use super::{CommonSettings, ServerSettings, ServiceSettings};

/// All settings of the gateway.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct GatewaySettings {
    /// Settings every service shares (`server.*` is its gRPC port: health and reflection).
    #[serde(flatten)]
    pub common: CommonSettings,
    /// `gateway.*`.
    pub gateway: GatewaySection,
}

impl ServiceSettings for GatewaySettings {
    fn common(&self) -> &CommonSettings {
        &self.common
    }

    fn restart_needed(&self, new: &Self) -> Vec<&'static str> {
        let mut changed = self.common.restart_needed(&new.common);
        if self.gateway != new.gateway {
            changed.push("gateway");
        }
        changed
    }
}

/// `gateway.*`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct GatewaySection {
    /// The HTTP listener: `host`, `port` (8080; 0 = a free one), `advertise_host`, and the
    /// connection bounds of `server.*` (`max_connections`, `max_connections_per_client`, which
    /// `trusted_proxies` are exempt from, `handshake_timeout_ms`, keepalive).
    pub http: ServerSettings,
    /// Largest request body accepted, in bytes; larger ones get 413 before they are read.
    pub body_limit_bytes: usize,
    /// Deadline of one REST request, everything it does included (body, token exchange, the
    /// service's call, which gets what is left as its gRPC deadline); a client's own
    /// `grpc-timeout`-style wish is not taken, so no client can hold a call open longer.
    pub timeout_ms: u64,
    /// Per-client request rate (by peer address).
    pub rate: ClientRate,
    /// Cross-origin access for browsers on other origins.
    pub cors: CorsSettings,
    /// Proxies in front of the gateway (an Ingress controller, a load balancer), as addresses or
    /// CIDR blocks (`10.0.0.0/8`): a request from one of them is counted against the client its
    /// `X-Forwarded-For` names (the last address there that is not itself a trusted proxy). From
    /// anyone else the header is ignored: it would let a client pick its own address.
    pub trusted_proxies: Vec<String>,
    /// Whether `GET /v1/instances` (the console's picture of the system) shows each instance's
    /// network address. Off by default: the services' addresses are internal topology that a
    /// public client has no use for; the demo and a local compose stack turn it on.
    pub instance_addresses: bool,
}

impl Default for GatewaySection {
    fn default() -> Self {
        Self {
            http: ServerSettings {
                port: 8080,
                ..ServerSettings::default()
            },
            body_limit_bytes: 4 * 1024 * 1024,
            timeout_ms: 10_000,
            rate: ClientRate::default(),
            cors: CorsSettings::default(),
            trusted_proxies: Vec::new(),
            instance_addresses: false,
        }
    }
}

/// `gateway.rate.*`: a token bucket per client address.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct ClientRate {
    /// Requests per second one client may make on average; 0 = no limit.
    pub per_second: u32,
    /// Requests one client may make at once after a quiet spell.
    pub burst: u32,
}

impl Default for ClientRate {
    fn default() -> Self {
        Self {
            per_second: 50,
            burst: 100,
        }
    }
}

/// `gateway.cors.*`: which other origins' pages may call the API from a browser.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct CorsSettings {
    /// Origins allowed (`https://app.example.com`); empty = none but the gateway's own (the
    /// console is served from it). `*` is refused: the API takes bearer tokens.
    pub allowed_origins: Vec<String>,
    /// How long a browser may cache a preflight answer, in seconds.
    pub max_age_secs: u64,
}
