//! Who is on the other end of a request: the client's address and whether it
//! reached the first trusted hop over TLS.
//!
//! The address is the TCP peer, unless the peer is a proxy listed in
//! `TRUSTED_PROXIES`: then it is the last `X-Forwarded-For` entry that is not
//! itself a trusted proxy (entries to the left of it were written by the client
//! and prove nothing). Limits per address, the auth hook and the logs all use
//! this one answer. Does not own what is done with the address.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

use crate::config::parse_network;

/// The proxies whose forwarding headers are believed (`TRUSTED_PROXIES`).
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    networks: Vec<IpNet>,
}

impl TrustedProxies {
    /// Parses the setting's entries; `Settings::validate` has already
    /// refused bad ones, so a bad entry here is skipped.
    pub fn new(entries: &[String]) -> TrustedProxies {
        TrustedProxies {
            networks: entries
                .iter()
                .filter_map(|entry| parse_network(entry).ok())
                .collect(),
        }
    }

    fn trusts(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        self.networks.iter().any(|net| net.contains(&address))
    }

    /// The client's address for a request from `peer` with `headers`.
    pub fn client_address(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = canonical(peer?.ip());
        if !self.trusts(peer) {
            return Some(peer);
        }
        // Walk from the nearest hop outwards; stop at the first hop that is
        // not a trusted proxy, or at an entry that cannot be read (whatever
        // lies beyond it is the client's word).
        let mut address = peer;
        for entry in forwarded_for(headers).rev() {
            let Ok(hop) = entry.parse::<IpAddr>() else {
                break;
            };
            address = canonical(hop);
            if !self.trusts(address) {
                break;
            }
        }
        Some(address)
    }

    /// Whether the client reached the first trusted proxy over HTTPS, by that
    /// proxy's `X-Forwarded-Proto` (believed only from a trusted peer).
    pub fn forwarded_https(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> bool {
        let Some(peer) = peer else { return false };
        if !self.trusts(peer.ip()) {
            return false;
        }
        headers
            .get_all("x-forwarded-proto")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .next_back()
            .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
    }
}

/// Every `X-Forwarded-For` entry, in the order the hops appended them (several
/// headers count as one comma-separated list).
fn forwarded_for(headers: &HeaderMap) -> impl DoubleEndedIterator<Item = &str> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .collect::<Vec<_>>()
        .into_iter()
}

/// An IPv4 address seen through an IPv6 socket (`::ffff:a.b.c.d`) is the IPv4
/// address, so limits and CIDRs see one client as one address.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    fn peer(ip: &str) -> Option<SocketAddr> {
        Some(SocketAddr::new(ip.parse().unwrap(), 4000))
    }

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::new(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(
            trusted.client_address(peer("203.0.113.9"), &h),
            Some("203.0.113.9".parse().unwrap())
        );
        assert!(!proxies(&[]).forwarded_https(peer("10.0.0.1"), &h));
    }

    #[test]
    fn a_trusted_peer_gives_the_last_untrusted_hop() {
        let trusted = proxies(&["10.0.0.0/8", "192.168.1.1"]);
        // the client claims 6.6.6.6; the first proxy saw 198.51.100.7
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6, 198.51.100.7"),
            ("x-forwarded-for", "192.168.1.1"),
        ]);
        assert_eq!(
            trusted.client_address(peer("10.1.2.3"), &h),
            Some("198.51.100.7".parse().unwrap())
        );
    }

    #[test]
    fn garbage_stops_the_walk_at_the_last_readable_hop() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "1.1.1.1, not-an-ip, 10.0.0.2")]);
        assert_eq!(
            trusted.client_address(peer("10.0.0.1"), &h),
            Some("10.0.0.2".parse().unwrap())
        );
        let none = headers(&[]);
        assert_eq!(
            trusted.client_address(peer("10.0.0.1"), &none),
            Some("10.0.0.1".parse().unwrap())
        );
    }

    #[test]
    fn mapped_ipv4_is_ipv4() {
        let trusted = proxies(&["127.0.0.1"]);
        let h = headers(&[("x-forwarded-for", "::ffff:198.51.100.7")]);
        assert_eq!(
            trusted.client_address(peer("::ffff:127.0.0.1"), &h),
            Some("198.51.100.7".parse().unwrap())
        );
    }

    #[test]
    fn https_only_from_a_trusted_proxy() {
        let trusted = proxies(&["127.0.0.1"]);
        let h = headers(&[("x-forwarded-proto", "https")]);
        assert!(trusted.forwarded_https(peer("127.0.0.1"), &h));
        assert!(!trusted.forwarded_https(peer("127.0.0.2"), &h));
        let http = headers(&[("x-forwarded-proto", "http")]);
        assert!(!trusted.forwarded_https(peer("127.0.0.1"), &http));
    }
}
