//! Opening TCP connections, optionally from a chosen local address.
//!
//! A load generator that opens tens of thousands of connections to one `host:port` runs out of ephemeral
//! ports on one source address (about 28,000 on Linux, fewer while closed ones sit in `TIME_WAIT`). Binding
//! each socket to its own address of `127.0.0.0/8` before connecting gives every address its own range.

use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::net::{lookup_host, TcpSocket, TcpStream};

/// Connects to `authority` (`host:port`), from `local` when given (any port), with Nagle's algorithm off:
/// every request and frame this client writes is complete, and latency is what it measures.
pub(crate) async fn connect(authority: &str, local: Option<IpAddr>) -> io::Result<TcpStream> {
    let mut last_error = None;
    for addr in lookup_host(authority).await? {
        match connect_one(addr, local).await {
            Ok(stream) => return Ok(stream),
            Err(err) => last_error = Some(err),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{authority} has no address"))))
}

async fn connect_one(addr: SocketAddr, local: Option<IpAddr>) -> io::Result<TcpStream> {
    let stream = match local {
        None => TcpStream::connect(addr).await?,
        Some(ip) => {
            let socket = match addr {
                SocketAddr::V4(_) => TcpSocket::new_v4()?,
                SocketAddr::V6(_) => TcpSocket::new_v6()?,
            };
            socket.bind(SocketAddr::new(ip, 0))?;
            socket.connect(addr).await?
        }
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn a_connection_leaves_from_the_local_address_asked_for() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority = listener.local_addr().unwrap().to_string();
        let local: IpAddr = [127, 0, 0, 7].into();
        let stream = connect(&authority, Some(local)).await.unwrap();
        assert_eq!(stream.local_addr().unwrap().ip(), local);
        let (_, peer) = listener.accept().await.unwrap();
        assert_eq!(peer.ip(), local);
    }

    #[tokio::test]
    async fn without_a_local_address_the_system_chooses() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = connect(&listener.local_addr().unwrap().to_string(), None).await.unwrap();
        assert!(stream.nodelay().unwrap());
    }
}
