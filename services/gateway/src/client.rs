//! Who the client is: the peer address of the connection, or — when that peer is a trusted proxy
//! (`gateway.trusted_proxies`: the Ingress controller, a load balancer) — the client its
//! `X-Forwarded-For` names. Per-client limits count this address, and it is what the gateway
//! forwards to the services.

use std::net::IpAddr;

use http::HeaderMap;

/// An address or a CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    network: IpAddr,
    prefix: u8,
}

/// A `gateway.trusted_proxies` entry that is neither an address nor a CIDR block.
#[derive(Debug, thiserror::Error)]
#[error("gateway.trusted_proxies: {0:?} is not an IP address or a CIDR block like 10.0.0.0/8")]
pub struct BadBlock(String);

impl Block {
    /// Parses `10.1.2.3` or `10.0.0.0/8` (IPv6 too).
    pub fn parse(text: &str) -> Result<Self, BadBlock> {
        let bad = || BadBlock(text.to_owned());
        let (address, prefix) = match text.trim().split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text.trim(), None),
        };
        let network: IpAddr = address.parse().map_err(|_| bad())?;
        let width = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= width)
                .ok_or_else(bad)?,
            None => width,
        };
        Ok(Self { network, prefix })
    }

    /// Whether `ip` is in this block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(network), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(network) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(network) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The client of a request that came from `peer` with `headers`, given the trusted proxies.
pub fn client_of(peer: IpAddr, headers: &HeaderMap, proxies: &[Block]) -> IpAddr {
    let trusted = |ip: IpAddr| proxies.iter().any(|block| block.contains(ip));
    if !trusted(peer) {
        return peer;
    }
    // Each proxy appends the address it got the request from; read from the right, the first
    // address that is not a trusted proxy is the client (anything left of it the client wrote).
    let mut client = peer;
    for value in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(value) = value.to_str() else {
            return client;
        };
        for hop in value.rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) if trusted(ip) => client = ip,
                Ok(ip) => return ip,
                Err(_) => return client,
            }
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append("x-forwarded-for", value.parse().expect("header"));
        }
        map
    }

    #[test]
    fn blocks_parse_and_contain() {
        let block = Block::parse("10.0.0.0/8").expect("block");
        assert!(block.contains("10.200.1.2".parse().expect("ip")));
        assert!(!block.contains("11.0.0.1".parse().expect("ip")));
        assert!(
            Block::parse("::1")
                .expect("v6")
                .contains("::1".parse().expect("ip"))
        );
        for bad in ["10.0.0.0/33", "ten", "10.0.0.0/x", ""] {
            assert!(Block::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn forwarded_addresses_count_only_from_trusted_proxies() {
        let proxies = [Block::parse("10.0.0.0/8").expect("block")];
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        // Not from a proxy: the client's own header is ignored.
        assert_eq!(
            client_of(ip("203.0.113.9"), &headers(&["1.2.3.4"]), &proxies),
            ip("203.0.113.9")
        );
        // From the proxy: the right-most address that is not a proxy.
        let spoofed = headers(&["6.6.6.6, 198.51.100.7, 10.1.1.1"]);
        assert_eq!(
            client_of(ip("10.0.0.5"), &spoofed, &proxies),
            ip("198.51.100.7")
        );
        assert_eq!(
            client_of(ip("10.0.0.5"), &headers(&[]), &proxies),
            ip("10.0.0.5")
        );
        assert_eq!(
            client_of(ip("10.0.0.5"), &headers(&["garbage"]), &proxies),
            ip("10.0.0.5")
        );
    }
}
