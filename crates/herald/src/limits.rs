//! Limits on what one client, one key or all clients together may take, so that nobody can take the server from
//! everyone else. Transports ask here before they serve; over a limit they answer with the [`LimitError`]'s code
//! (`429` with `Retry-After` over HTTP, an `error` frame on a WebSocket) and the refusal is counted and logged
//! through [`Refusals`].
//!
//! - **Connections** (a WebSocket, an SSE stream, a held long poll): at most `max_connections` in all and
//!   `max_connections_per_ip` per client address. An IPv6 client counts by its /64, the block one subscriber
//!   usually gets. The address is the peer's, or the one a trusted proxy put in `X-Forwarded-For`
//!   (`http/client_ip.rs`). An [`Admission`] holds the place until it is dropped.
//! - **Publish rate**: a token bucket per WebSocket connection (`publish_rate_per_connection` messages a
//!   second, the same number in a burst) and one per publisher key (`publish_rate_per_key`).
//!
//! The other limits are checked where the data is read (body and frame size, channels per request,
//! subscriptions per connection, history memory) and only counted here.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{Config, ConfigError};
use crate::refusal::{Refusal, Refusals};

/// What a client over a connection limit is told to wait before trying again.
pub const CONNECTION_RETRY_AFTER: Duration = Duration::from_secs(5);

/// A limit was reached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// `max_connections`.
    #[error("the server holds its maximum of {0} connections; retry later")]
    Connections(usize),
    /// `max_connections_per_ip`.
    #[error("this address holds its maximum of {0} connections; close one or retry later")]
    ConnectionsPerIp(usize),
    /// `publish_rate_per_connection` or `publish_rate_per_key`.
    #[error("publishing faster than {rate} messages a second per {per}; retry in {} ms", retry_after.as_millis())]
    PublishRate {
        /// The configured rate.
        rate: u32,
        /// "connection" or "key".
        per: &'static str,
        /// When the next message will be accepted.
        retry_after: Duration,
    },
}

impl LimitError {
    /// The stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            LimitError::Connections(_) | LimitError::ConnectionsPerIp(_) => "too_many_connections",
            LimitError::PublishRate { .. } => "rate_limited",
        }
    }

    /// How long the client should wait.
    pub fn retry_after(&self) -> Duration {
        match self {
            LimitError::Connections(_) | LimitError::ConnectionsPerIp(_) => CONNECTION_RETRY_AFTER,
            LimitError::PublishRate { retry_after, .. } => *retry_after,
        }
    }
}

/// An address range: `10.0.0.0/8`, `fd00::/8`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    addr: IpAddr,
    prefix: u8,
}

impl IpRange {
    /// Whether `ip` is in the range. An IPv4-mapped IPv6 address counts as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpRange {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not an address or a range such as 10.0.0.0/8");
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix.parse::<u8>().map_err(|_| bad())?)),
            None => (text.trim(), None),
        };
        let addr = canonical(addr.parse::<IpAddr>().map_err(|_| bad())?);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(bad());
        }
        Ok(Self { addr, prefix })
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:1.2.3.4`, how a dual-stack socket shows IPv4 peers) as IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The key a client's connections are counted under: its IPv4 address, or its IPv6 /64.
fn counted_as(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
        v4 => v4,
    }
}

/// A token bucket: `rate` tokens a second, at most `rate` saved up.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket of `rate` tokens a second.
    pub fn new(rate: u32) -> Self {
        let rate = f64::from(rate.max(1));
        Self { rate, tokens: rate, last: Instant::now() }
    }

    /// Takes one token, or says how long until one is there.
    pub fn take(&mut self) -> Result<(), Duration> {
        let now = Instant::now();
        let earned = now.saturating_duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + earned).min(self.rate);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

#[derive(Default)]
struct Open {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// The server's limits and what is held against them.
pub struct Limits {
    config: Arc<Config>,
    trusted_proxies: Vec<IpRange>,
    refusals: Arc<Refusals>,
    open: Mutex<Open>,
    keys: Mutex<HashMap<String, TokenBucket>>,
}

/// A connection's place under the connection limits, given back when dropped.
pub struct Admission {
    limits: Arc<Limits>,
    ip: IpAddr,
}

impl Admission {
    /// The address admitted.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.total = open.total.saturating_sub(1);
        if let Some(count) = open.per_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.per_ip.remove(&self.ip);
            }
        }
    }
}

impl fmt::Debug for Admission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admission").field("ip", &self.ip).finish()
    }
}

impl Limits {
    /// The limits of `config`, its `trusted_proxies` read; refusals are counted and logged on `refusals`. A
    /// proxy that is not an address or a range is refused naming `trusted_proxies` (or the variable that set it).
    pub fn new(config: Arc<Config>, refusals: Arc<Refusals>) -> Result<Self, ConfigError> {
        let key = config.source("trusted_proxies");
        let trusted_proxies = config
            .trusted_proxies
            .iter()
            .filter(|text| !text.trim().is_empty())
            .map(|text| text.parse().map_err(|e: String| ConfigError::invalid(key, e)))
            .collect::<Result<_, _>>()?;
        Ok(Self { config, trusted_proxies, refusals, open: Mutex::default(), keys: Mutex::default() })
    }

    /// The proxies whose `X-Forwarded-For` names the client.
    pub fn trusted_proxies(&self) -> &[IpRange] {
        &self.trusted_proxies
    }

    fn refuse<T>(&self, reason: Refusal, err: LimitError, who: impl fmt::Display) -> Result<T, LimitError> {
        self.refusals.record(reason, || format!("{who}: {err}"));
        Err(err)
    }

    /// Admits one more connection from `ip`, or says which limit it would break.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admission, LimitError> {
        let ip = counted_as(ip);
        let (max, max_per_ip) = (self.config.max_connections, self.config.max_connections_per_ip);
        let refused = {
            let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
            let from_ip = open.per_ip.get(&ip).copied().unwrap_or(0);
            if from_ip >= max_per_ip {
                Some((Refusal::ConnectionsPerIp, LimitError::ConnectionsPerIp(max_per_ip)))
            } else if open.total >= max {
                Some((Refusal::Connections, LimitError::Connections(max)))
            } else {
                open.total += 1;
                *open.per_ip.entry(ip).or_default() += 1;
                None
            }
        };
        match refused {
            Some((reason, err)) => self.refuse(reason, err, ip),
            None => Ok(Admission { limits: self.clone(), ip }),
        }
    }

    /// The publish-rate bucket of a new WebSocket connection.
    pub fn connection_bucket(&self) -> TokenBucket {
        TokenBucket::new(self.config.publish_rate_per_connection)
    }

    /// Takes one message from a connection's bucket.
    pub fn publish_on_connection(&self, bucket: &mut TokenBucket, ip: IpAddr) -> Result<(), LimitError> {
        bucket.take().or_else(|retry_after| {
            let rate = self.config.publish_rate_per_connection;
            let err = LimitError::PublishRate { rate, per: "connection", retry_after };
            self.refuse(Refusal::PublishRateConnection, err, ip)
        })
    }

    /// Takes one message from the bucket of the publisher key named `key`.
    pub fn publish_with_key(&self, key: &str) -> Result<(), LimitError> {
        let rate = self.config.publish_rate_per_key;
        let taken = {
            let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
            // One bucket per configured key, so this map is as small as the configuration.
            keys.entry(key.to_owned()).or_insert_with(|| TokenBucket::new(rate)).take()
        };
        taken.or_else(|retry_after| {
            let err = LimitError::PublishRate { rate, per: "key", retry_after };
            self.refuse(Refusal::PublishRateKey, err, format_args!("publisher key {key:?}"))
        })
    }

    /// Counts a refusal decided elsewhere (sizes, channels per request, subscriptions).
    pub fn refused(&self, reason: Refusal, detail: impl FnOnce() -> String) {
        self.refusals.record(reason, detail);
    }

    /// Connections held now, in all.
    pub fn open_connections(&self) -> usize {
        self.open.lock().unwrap_or_else(PoisonError::into_inner).total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    fn limits(max: usize, per_ip: usize) -> Arc<Limits> {
        let config = Config { max_connections: max, max_connections_per_ip: per_ip, ..Config::default() };
        Arc::new(Limits::new(Arc::new(config), Arc::new(Refusals::new(Arc::new(Metrics::default())))).unwrap())
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn one_address_is_held_to_its_share_and_others_still_get_in() {
        let limits = limits(10, 2);
        let held: Vec<Admission> = (0..2).map(|_| limits.admit(ip("10.0.0.1")).unwrap()).collect();
        assert_eq!(limits.admit(ip("10.0.0.1")).unwrap_err(), LimitError::ConnectionsPerIp(2));
        assert!(limits.admit(ip("10.0.0.2")).is_ok());
        drop(held);
        assert!(limits.admit(ip("10.0.0.1")).is_ok(), "places are given back");
    }

    #[test]
    fn the_total_is_shared_by_everyone() {
        let limits = limits(2, 2);
        let _a = limits.admit(ip("10.0.0.1")).unwrap();
        let _b = limits.admit(ip("10.0.0.2")).unwrap();
        assert_eq!(limits.admit(ip("10.0.0.3")).unwrap_err(), LimitError::Connections(2));
        assert_eq!(limits.open_connections(), 2);
    }

    #[test]
    fn an_ipv6_client_counts_by_its_64_and_a_mapped_ipv4_as_ipv4() {
        let limits = limits(10, 1);
        let _a = limits.admit(ip("2001:db8:1:2::1")).unwrap();
        assert!(limits.admit(ip("2001:db8:1:2::ffff")).is_err());
        assert!(limits.admit(ip("2001:db8:1:3::1")).is_ok());
        let _b = limits.admit(ip("192.0.2.1")).unwrap();
        assert!(limits.admit(ip("::ffff:192.0.2.1")).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_bucket_allows_its_burst_then_its_rate() {
        let mut bucket = TokenBucket::new(2);
        assert!(bucket.take().is_ok() && bucket.take().is_ok());
        assert_eq!(bucket.take(), Err(Duration::from_millis(500)));
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(bucket.take().is_ok());
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(bucket.take().is_ok() && bucket.take().is_ok() && bucket.take().is_err(), "at most a burst saved up");
    }

    #[tokio::test(start_paused = true)]
    async fn each_key_has_its_own_bucket() {
        let config = Config { publish_rate_per_key: 1, ..Config::default() };
        let limits = Limits::new(Arc::new(config), Arc::new(Refusals::new(Arc::new(Metrics::default())))).unwrap();
        assert!(limits.publish_with_key("a").is_ok());
        assert_eq!(limits.publish_with_key("a").unwrap_err().code(), "rate_limited");
        assert!(limits.publish_with_key("b").is_ok());
    }

    #[test]
    fn ranges_parse_and_contain() {
        let range: IpRange = "10.0.0.0/8".parse().unwrap();
        assert!(range.contains(ip("10.200.0.1")) && !range.contains(ip("11.0.0.1")));
        assert!(range.contains(ip("::ffff:10.0.0.1")));
        let one: IpRange = "127.0.0.1".parse().unwrap();
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let v6: IpRange = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        assert!("0.0.0.0/0".parse::<IpRange>().unwrap().contains(ip("8.8.8.8")));
        for bad in ["10.0.0.0/33", "nope", "10.0.0.0/x", ""] {
            assert!(bad.parse::<IpRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn trusted_proxies_are_read_and_a_bad_one_is_refused_naming_its_key() {
        let limits = |proxies: &[&str], variable: Option<&str>| {
            let mut config =
                Config { trusted_proxies: proxies.iter().map(|p| p.to_string()).collect(), ..Config::default() };
            if let Some(variable) = variable {
                config.sources.insert("trusted_proxies".into(), variable.into());
            }
            Limits::new(Arc::new(config), Arc::new(Refusals::new(Arc::new(Metrics::default()))))
        };
        let read = limits(&["10.0.0.0/8", "127.0.0.1"], None).unwrap();
        assert!(read.trusted_proxies().iter().any(|r| r.contains(ip("10.1.2.3"))));
        let bad = limits(&["nope"], None).err().unwrap().to_string();
        assert!(bad.starts_with("trusted_proxies: \"nope\""), "{bad}");
        let from_env = limits(&["nope"], Some("HERALD_TRUSTED_PROXIES")).err().unwrap().to_string();
        assert!(from_env.starts_with("HERALD_TRUSTED_PROXIES:"), "{from_env}");
    }
}
