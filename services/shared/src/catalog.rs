//! The one table of shippy services: name, gRPC service, binary and port, generated at build time
//! from `services/catalog.toml` (which the Dockerfile, the Makefile and the drift check read too).

/// One service of the system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServiceSpec {
    /// Name in discovery and the config centre, e.g. `vessel`.
    pub name: &'static str,
    /// Fully qualified gRPC service, e.g. `shippy.vessel.v1.VesselService`.
    pub grpc_service: &'static str,
    /// Name of the workspace binary, e.g. `shippy-vessel`.
    pub binary: &'static str,
    /// Fixed port in containers and Kubernetes (outside them the default is a free port).
    pub port: u16,
    /// Fixed HTTP port in containers and Kubernetes, for a service that also serves HTTP (the
    /// REST gateway); `None` for gRPC-only services.
    pub http_port: Option<u16>,
}

include!(concat!(env!("OUT_DIR"), "/catalog.rs"));

/// The service called `name`, if there is one.
pub fn find(name: &str) -> Option<&'static ServiceSpec> {
    ALL.iter().find(|spec| spec.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_ports_and_binaries_are_unique() {
        for (i, a) in ALL.iter().enumerate() {
            for b in &ALL[i + 1..] {
                assert_ne!(a.name, b.name);
                assert_ne!(a.port, b.port);
                assert_ne!(a.binary, b.binary);
                assert_ne!(a.grpc_service, b.grpc_service);
            }
        }
        assert_eq!(find("vessel"), Some(&VESSEL));
        assert_eq!(find("nope"), None);
    }
}
