//! Ports: bind the configured address (port 0 allowed) and work out the address to advertise.

use std::net::{IpAddr, SocketAddr};

use tokio::net::TcpListener;

use crate::config::ServerSettings;

/// A bound listener and the address other processes should use to reach it.
#[derive(Debug)]
pub(crate) struct Bound {
    /// The listening socket.
    pub listener: TcpListener,
    /// What the socket is bound to (the real port when 0 was asked for).
    pub local_addr: SocketAddr,
    /// `host:port` to put in the registry: never `0.0.0.0` or port 0.
    pub advertised: String,
}

/// Binds `server.host:server.port` and resolves the advertised address.
pub(super) async fn bind(settings: &ServerSettings) -> std::io::Result<Bound> {
    let listener = TcpListener::bind((settings.host, settings.port)).await?;
    let local_addr = listener.local_addr()?;
    let host = match &settings.advertise_host {
        Some(host) if !host.trim().is_empty() => host.trim().to_owned(),
        _ if local_addr.ip().is_unspecified() => host_address().await.to_string(),
        _ => local_addr.ip().to_string(),
    };
    let advertised = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{}", local_addr.port())
    } else {
        format!("{host}:{}", local_addr.port())
    };
    Ok(Bound {
        listener,
        local_addr,
        advertised,
    })
}

/// This host's address as other hosts see it: the first non-loopback address its hostname resolves
/// to (a container's or pod's IP), else loopback.
async fn host_address() -> IpAddr {
    let loopback = IpAddr::from([127, 0, 0, 1]);
    let Ok(name) = hostname::get() else {
        return loopback;
    };
    let name = name.to_string_lossy().into_owned();
    match tokio::net::lookup_host((name.as_str(), 0)).await {
        Ok(addrs) => addrs
            .map(|a| a.ip())
            .find(|ip| !ip.is_loopback() && !ip.is_unspecified())
            .unwrap_or_else(|| {
                tracing::warn!(host = %name, "hostname resolves to no routable address; advertising loopback (set server.advertise_host)");
                loopback
            }),
        Err(_) => loopback,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn port_zero_advertises_the_real_port() {
        let bound = bind(&ServerSettings::default()).await.expect("bind");
        assert_ne!(bound.local_addr.port(), 0);
        assert_eq!(
            bound.advertised,
            format!("127.0.0.1:{}", bound.local_addr.port())
        );
    }

    #[tokio::test]
    async fn unspecified_host_never_advertised() {
        let settings = ServerSettings {
            host: IpAddr::from([0, 0, 0, 0]),
            ..ServerSettings::default()
        };
        let bound = bind(&settings).await.expect("bind");
        assert!(
            !bound.advertised.starts_with("0.0.0.0"),
            "{}",
            bound.advertised
        );
        assert!(!bound.advertised.ends_with(":0"));

        let settings = ServerSettings {
            advertise_host: Some("vessel.internal".into()),
            ..ServerSettings::default()
        };
        let bound = bind(&settings).await.expect("bind");
        assert_eq!(
            bound.advertised,
            format!("vessel.internal:{}", bound.local_addr.port())
        );
    }
}
