//! Herald's base URL and the few URL-encoding rules the API needs, as pure functions.
//!
//! The client speaks plain HTTP to one `host:port`, optionally under a path prefix (a reverse proxy that
//! mounts Herald at `/herald`). A channel name may hold `/`, which in a path must be written `%2F`; query
//! values are percent-encoded so that even an invalid name reaches the server intact and is refused there
//! with the documented error, rather than being mangled into a different request.

use crate::error::ClientError;

/// A parsed `http://host[:port][/prefix]` or `https://…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BaseUrl {
    /// Whether the server speaks HTTPS.
    tls: bool,
    /// `host:port`, with brackets around an IPv6 host: what to connect to and the `Host` header.
    authority: String,
    /// The path prefix, empty or starting with `/`, never ending with `/`.
    prefix: String,
}

impl BaseUrl {
    /// Parses `url`: `http` (default port 80) or `https` (default port 443).
    pub(crate) fn parse(url: &str) -> Result<Self, ClientError> {
        let invalid = |reason| ClientError::InvalidUrl { url: url.to_string(), reason };
        let scheme_end = url.find("://").ok_or_else(|| invalid("expected http://host:port"))?;
        let tls = match url[..scheme_end].to_ascii_lowercase().as_str() {
            "http" => false,
            "https" => true,
            _ => return Err(invalid("the scheme must be http or https")),
        };
        let rest = &url[scheme_end + 3..];
        if rest.contains(['?', '#']) {
            return Err(invalid("a base URL cannot have a query or a fragment"));
        }
        let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
        if authority.contains('@') {
            return Err(invalid("user information in the URL is not supported"));
        }
        let (host, port) = split_host_port(authority).ok_or_else(|| invalid("expected host[:port]"))?;
        let port = match port {
            None if tls => 443,
            None => 80,
            Some(port) => port.parse::<u16>().map_err(|_| invalid("the port must be a number from 0 to 65535"))?,
        };
        Ok(Self { tls, authority: format!("{host}:{port}"), prefix: path.trim_end_matches('/').to_string() })
    }

    /// Whether the server speaks HTTPS.
    pub(crate) fn tls(&self) -> bool {
        self.tls
    }

    /// The host, without its port or an IPv6 address's brackets: the name a TLS certificate must carry.
    pub(crate) fn host(&self) -> &str {
        let host = self.authority.rsplit_once(':').map_or(self.authority.as_str(), |(host, _)| host);
        host.trim_start_matches('[').trim_end_matches(']')
    }

    /// `host:port`.
    pub(crate) fn authority(&self) -> &str {
        &self.authority
    }

    /// The path and query of an API route (`route` starts with `/`), under the prefix.
    pub(crate) fn path(&self, route: &str) -> String {
        format!("{}{route}", self.prefix)
    }

    /// The `ws://` (or `wss://`) URL of an API route.
    pub(crate) fn ws_url(&self, route: &str) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://{}{}{route}", self.authority, self.prefix)
    }
}

/// Splits `host[:port]`, keeping an IPv6 host's brackets; `None` when the host is empty or malformed.
fn split_host_port(authority: &str) -> Option<(&str, Option<&str>)> {
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (host, rest) = authority.split_at(end + 1);
        match rest {
            "" => (host, None),
            _ => (host, Some(rest.strip_prefix(':')?)),
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    (!host.is_empty() && host != "[]").then_some((host, port))
}

/// Percent-encodes `value`, keeping the unreserved characters and those of `keep`.
fn percent_encode(value: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(value.len());
    for &b in value.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') || keep.contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A channel name as one path segment: `/` becomes `%2F`; `:`, `@` and `=` stay as they are.
pub(crate) fn path_segment(channel: &str) -> String {
    percent_encode(channel, b":@=")
}

/// A query string built parameter by parameter (`a=1&b=2`, without the `?`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Query(String);

impl Query {
    /// Appends `key=value`, percent-encoding the value (`/`, `:` and `@` stay as they are).
    pub(crate) fn push(&mut self, key: &str, value: &str) -> &mut Self {
        if !self.0.is_empty() {
            self.0.push('&');
        }
        self.0.push_str(key);
        self.0.push('=');
        self.0.push_str(&percent_encode(value, b"/:@"));
        self
    }

    /// `route?query`, or `route` alone when there is no parameter.
    pub(crate) fn after(&self, route: &str) -> String {
        match self.0.is_empty() {
            true => route.to_string(),
            false => format!("{route}?{}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> BaseUrl {
        BaseUrl::parse(url).unwrap()
    }

    #[test]
    fn a_base_url_is_host_and_port() {
        let base = parse("http://127.0.0.1:7070");
        assert_eq!(base.authority(), "127.0.0.1:7070");
        assert_eq!(base.path("/v1/poll"), "/v1/poll");
        assert_eq!(base.ws_url("/v1/ws"), "ws://127.0.0.1:7070/v1/ws");
    }

    #[test]
    fn the_port_defaults_to_80_and_a_trailing_slash_is_ignored() {
        assert_eq!(parse("http://localhost/").authority(), "localhost:80");
        assert_eq!(parse("HTTP://localhost:8080/").path("/healthz"), "/healthz");
    }

    #[test]
    fn a_path_prefix_goes_before_every_route() {
        let base = parse("http://example.com:80/herald/");
        assert_eq!(base.path("/v1/sse"), "/herald/v1/sse");
        assert_eq!(base.ws_url("/v1/ws"), "ws://example.com:80/herald/v1/ws");
    }

    #[test]
    fn an_ipv6_host_keeps_its_brackets() {
        assert_eq!(parse("http://[::1]:7070").authority(), "[::1]:7070");
        assert_eq!(parse("http://[::1]").authority(), "[::1]:80");
    }

    #[test]
    fn https_defaults_to_443_and_its_websockets_to_wss() {
        let base = parse("https://herald.example/");
        assert!(base.tls());
        assert_eq!((base.authority(), base.host()), ("herald.example:443", "herald.example"));
        assert_eq!(base.ws_url("/v1/ws"), "wss://herald.example:443/v1/ws");
        assert_eq!(parse("https://[::1]:7443").host(), "::1");
        assert!(!parse("http://localhost").tls());
    }

    #[test]
    fn anything_but_http_or_https_to_a_host_is_refused() {
        for url in [
            "ws://127.0.0.1:7070",
            "127.0.0.1:7070",
            "http://",
            "http://:7070",
            "http://host:port",
            "http://host:70000",
            "http://user@host",
            "http://host/?x=1",
            "http://[::1",
            "http://[::1]x",
        ] {
            assert!(matches!(BaseUrl::parse(url), Err(ClientError::InvalidUrl { .. })), "{url}");
        }
    }

    #[test]
    fn a_slash_in_a_channel_name_is_written_percent_2f_in_a_path() {
        assert_eq!(path_segment("orders/42"), "orders%2F42");
        assert_eq!(path_segment("chat:room@site=1"), "chat:room@site=1");
    }

    #[test]
    fn characters_outside_the_channel_alphabet_are_percent_encoded_not_dropped() {
        assert_eq!(path_segment("a b%é"), "a%20b%25%C3%A9");
    }

    #[test]
    fn query_values_are_percent_encoded_but_keep_slashes_and_colons() {
        let mut query = Query::default();
        query.push("channel", "orders/42").push("channel", "chat:a=b&c").push("since", "AQ-_");
        assert_eq!(query.after("/v1/poll"), "/v1/poll?channel=orders/42&channel=chat:a%3Db%26c&since=AQ-_");
    }

    #[test]
    fn an_empty_query_leaves_the_route_alone() {
        assert_eq!(Query::default().after("/v1/sse"), "/v1/sse");
    }
}
