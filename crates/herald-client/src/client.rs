//! The [`Client`] handle: where Herald is, and where connections leave from. Cheap to clone; holds no
//! connection, because every request and every subscription opens its own (a test or a benchmark then sees
//! exactly one connection per subscriber); [`Client::connect_http`] keeps one open for many requests.

use std::net::IpAddr;
use std::sync::Arc;

use tokio::net::TcpStream;

use crate::error::ClientError;
use crate::url::BaseUrl;

/// A handle on one Herald server. Publish with [`Client::publish`], subscribe with [`Client::subscribe`].
#[derive(Clone)]
pub struct Client {
    base: BaseUrl,
    local_ip: Option<IpAddr>,
    authorization: Option<Arc<str>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("local_ip", &self.local_ip)
            .field("authorization", &self.authorization.as_ref().map(|_| "Bearer …"))
            .finish()
    }
}

impl Client {
    /// A client for the Herald at `base_url`: `http://host[:port][/prefix]` (plain HTTP, no TLS; the port
    /// defaults to 80). Nothing is connected yet.
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        Ok(Self { base: BaseUrl::parse(base_url)?, local_ip: None, authorization: None })
    }

    /// The same client, opening every connection from `ip` (the port is chosen by the system). A load
    /// generator spreads its connections over `127.0.0.0/8` this way so that the ephemeral ports of one
    /// source address never run out. `ip` must be an address of this machine, of the server's family.
    pub fn with_local_ip(mut self, ip: IpAddr) -> Self {
        self.local_ip = Some(ip);
        self
    }

    /// The same client, sending `credential` as `Authorization: Bearer <credential>` on every request and
    /// WebSocket handshake: a publisher key to publish where keys are required, or a subscriber token (JWT) to
    /// subscribe to private channels. It is never printed, not even by `Debug`.
    pub fn with_bearer(mut self, credential: &str) -> Self {
        self.authorization = Some(Arc::from(format!("Bearer {credential}")));
        self
    }

    /// The `Authorization` header value, if a credential was set.
    pub(crate) fn authorization(&self) -> Option<&Arc<str>> {
        self.authorization.as_ref()
    }

    /// `host:port`, what the client connects to.
    pub fn authority(&self) -> &str {
        self.base.authority()
    }

    pub(crate) fn base(&self) -> &BaseUrl {
        &self.base
    }

    /// A new TCP connection to the server, from the local address if one was set.
    pub(crate) async fn connect_tcp(&self) -> Result<TcpStream, ClientError> {
        Ok(crate::net::connect(self.base.authority(), self.local_ip).await?)
    }
}
