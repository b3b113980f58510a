//! Lets hyper 1 drive a tokio `TcpStream`.
//!
//! hyper 1 has its own `Read`/`Write` traits; the usual bridge lives in `hyper-util`, a large crate for a
//! few lines. This one stays within safe code (the workspace forbids `unsafe`), so it reads into a small
//! buffer of its own and copies into hyper's, one short copy per read, which a client can afford.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Bytes read from the socket at most per call.
const READ_CHUNK: usize = 16 * 1024;

/// A `TcpStream` that implements hyper's IO traits.
pub(crate) struct HyperTcp {
    stream: TcpStream,
    buf: Box<[u8]>,
}

impl HyperTcp {
    /// Wraps a connected stream.
    pub(crate) fn new(stream: TcpStream) -> Self {
        Self { stream, buf: vec![0; READ_CHUNK].into_boxed_slice() }
    }
}

impl hyper::rt::Read for HyperTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut cursor: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let len = cursor.remaining().min(this.buf.len());
        let mut read = ReadBuf::new(&mut this.buf[..len]);
        ready!(Pin::new(&mut this.stream).poll_read(cx, &mut read))?;
        cursor.put_slice(read.filled());
        Poll::Ready(Ok(()))
    }
}

impl hyper::rt::Write for HyperTcp {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }
}
