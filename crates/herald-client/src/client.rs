//! The [`Client`] handle: where Herald is. Cheap to clone; holds no connection, because every request and
//! every subscription opens its own (a test or a benchmark then sees exactly one connection per subscriber).

use crate::error::ClientError;
use crate::url::BaseUrl;

/// A handle on one Herald server. Publish with [`Client::publish`], subscribe with [`Client::subscribe`].
#[derive(Debug, Clone)]
pub struct Client {
    base: BaseUrl,
}

impl Client {
    /// A client for the Herald at `base_url`: `http://host[:port][/prefix]` (plain HTTP, no TLS; the port
    /// defaults to 80). Nothing is connected yet.
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        Ok(Self { base: BaseUrl::parse(base_url)? })
    }

    /// `host:port`, what the client connects to.
    pub fn authority(&self) -> &str {
        self.base.authority()
    }

    pub(crate) fn base(&self) -> &BaseUrl {
        &self.base
    }
}
