//! The client's address, for the per-address connection limit.
//!
//! It is the TCP peer's address, unless the peer is one of the configured `trusted_proxies`: then it is the
//! nearest address in `X-Forwarded-For` that is not a trusted proxy (read from the right, because each proxy
//! appends the address it received the request from, and only the entries added by trusted proxies can be
//! believed: a client can write anything in the header it sends). With no trusted proxy configured, the header
//! is ignored, so a client cannot pick its own address.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::HeaderMap;

use super::AppState;
use crate::limits::{canonical, IpRange};

/// The address a request is counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        // A router served without connect info (an embedding that did not ask for it) counts everyone as one.
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |ConnectInfo(addr)| addr.ip());
        Ok(Self(client_ip(peer, &parts.headers, state.limits.trusted_proxies())))
    }
}

/// The client's address, from the peer's and, behind trusted proxies, `X-Forwarded-For`.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpRange]) -> IpAddr {
    let peer = canonical(peer);
    let is_trusted = |ip: IpAddr| trusted.iter().any(|range| range.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        // An entry that is not an address ends what can be believed: the last trusted hop is the client.
        let Ok(ip) = hop.parse::<IpAddr>().map(canonical) else { break };
        client = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in xff {
            headers.append("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn trusted() -> Vec<IpRange> {
        vec!["10.0.0.0/8".parse().unwrap()]
    }

    #[test]
    fn without_trusted_proxies_the_header_is_ignored() {
        assert_eq!(client_ip(ip("203.0.113.9"), &headers(&["1.2.3.4"]), &[]), ip("203.0.113.9"));
        assert_eq!(client_ip(ip("10.0.0.1"), &headers(&["1.2.3.4"]), &[]), ip("10.0.0.1"));
    }

    #[test]
    fn a_request_not_from_a_trusted_proxy_is_its_peer() {
        assert_eq!(client_ip(ip("203.0.113.9"), &headers(&["1.2.3.4"]), &trusted()), ip("203.0.113.9"));
    }

    #[test]
    fn behind_trusted_proxies_the_nearest_untrusted_hop_is_the_client() {
        let spoofed = headers(&["6.6.6.6, 198.51.100.7", "10.0.0.2"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &spoofed, &trusted()), ip("198.51.100.7"));
        assert_eq!(client_ip(ip("10.0.0.1"), &headers(&["10.0.0.3"]), &trusted()), ip("10.0.0.3"));
        assert_eq!(client_ip(ip("10.0.0.1"), &headers(&[]), &trusted()), ip("10.0.0.1"));
        assert_eq!(client_ip(ip("10.0.0.1"), &headers(&["garbage, 10.0.0.4"]), &trusted()), ip("10.0.0.4"));
        assert_eq!(client_ip(ip("::ffff:10.0.0.1"), &headers(&["198.51.100.7"]), &trusted()), ip("198.51.100.7"));
    }
}
