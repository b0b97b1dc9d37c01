//! Generated protobuf messages and gRPC clients/servers for the shippy services.
//!
//! Code is generated at build time from `proto/` by protox and tonic-prost-build; no system
//! `protoc` is involved. Versioned packages map to modules: `shippy.vessel.v1` is [`vessel::v1`].

pub mod codec;

/// `shippy.consignment.v1`.
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations
)]
pub mod consignment {
    /// Version 1 of the consignment API.
    pub mod v1 {
        tonic::include_proto!("shippy.consignment.v1");
    }
}

/// `shippy.vessel.v1`.
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations
)]
pub mod vessel {
    /// Version 1 of the vessel API.
    pub mod v1 {
        tonic::include_proto!("shippy.vessel.v1");
    }
}

/// `shippy.user.v1`.
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations
)]
pub mod user {
    /// Version 1 of the user API.
    pub mod v1 {
        tonic::include_proto!("shippy.user.v1");
    }
}

/// Encoded `FileDescriptorSet` of every shippy proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/shippy_descriptor.bin"));

/// Fully qualified gRPC service names, as used by the health service.
pub mod service_names {
    /// `shippy.consignment.v1.ShippingService`.
    pub const SHIPPING: &str = "shippy.consignment.v1.ShippingService";
    /// `shippy.vessel.v1.VesselService`.
    pub const VESSEL: &str = "shippy.vessel.v1.VesselService";
    /// `shippy.user.v1.UserService`.
    pub const USER: &str = "shippy.user.v1.UserService";
}

/// Idempotency keys: the calls that honour one. A caller names what it asks to create with an
/// `idempotency-key` (metadata; HTTP: `Idempotency-Key`), and a repeat of the call with that key
/// is answered with what the first did, creating nothing more. The balancer may therefore retry
/// these calls when they carry a key, and the gateway forwards the header to them alone.
pub mod idempotency {
    /// The metadata key (and, case aside, the HTTP header) a key travels in.
    pub const METADATA_KEY: &str = "idempotency-key";

    /// `/package.Service/Method` of every call that honours a key.
    pub const KEYED_METHODS: &[&str] = &[
        "/shippy.consignment.v1.ShippingService/CreateConsignment",
        "/shippy.vessel.v1.VesselService/Create",
    ];

    /// Whether the call to `path` (`/package.Service/Method`) honours a key.
    pub fn honours_key(path: &str) -> bool {
        KEYED_METHODS.contains(&path)
    }
}
