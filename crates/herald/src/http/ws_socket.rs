//! The framing of a served WebSocket: tungstenite reads the client's frames (and answers its pings and close),
//! Herald writes its own frames into a buffer that exists only while something waits in it.
//!
//! Why not tokio-tungstenite's `WebSocketStream`: it keeps two waker proxies (an `Arc` each, 128 bytes together)
//! so that its two halves can be driven from two tasks, and tungstenite's write buffer keeps the capacity of the
//! largest batch it ever wrote (up to its 16 KiB) for the connection's life. Herald drives each socket from one
//! task, and an idle connection holds no write buffer here (docs/BENCHMARKS.md, *Memory per idle WebSocket*).
//! A frame the fan-out encoded once for every subscriber ([`Socket::feed_wire`]) is copied as it is, with no
//! check and no framing per connection.
//!
//! **One task** polls a socket's reads and writes (its split halves included): a read registers the caller's
//! waker only, so a second task waiting to write would not be woken by a read that left the socket writable.

use std::io::{self, Read, Write};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// How much the write buffer gathers before a frame waits for it to be written: a peer that stops reading holds
/// at most this and one frame in it.
const WRITE_BUFFER_BYTES: usize = 16 * 1024;

/// A server's WebSocket over `io`: a `Stream` of the client's messages and a `Sink` of the server's.
pub struct Socket<S> {
    io: S,
    /// tungstenite's reading state: partial frames and messages, the close handshake.
    context: WebSocketContext,
    /// Frames written and not yet taken by `io`; freed once empty.
    out: Vec<u8>,
    /// The client closed, or reading failed: the stream is over.
    ended: bool,
}

impl<S> Socket<S> {
    /// A server's socket over an upgraded connection.
    pub fn new(io: S, config: WebSocketConfig) -> Self {
        Self { io, context: WebSocketContext::new(Role::Server, Some(config)), out: Vec::new(), ended: false }
    }

    /// The connection.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// The connection.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }

    /// Refuses a write once a close was sent or received, as tungstenite would.
    fn check_writable(&self) -> Result<(), WsError> {
        if self.context.can_write() {
            Ok(())
        } else {
            Err(WsError::AlreadyClosed)
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Socket<S> {
    /// Queues a frame already encoded whole (header included, e.g. [`crate::encoded::EncodedMessage::ws_wire`]),
    /// without flushing; waits first while the buffer is full.
    pub async fn feed_wire(&mut self, wire: &[u8]) -> Result<(), WsError> {
        std::future::poll_fn(|cx| self.poll_room(cx)).await?;
        self.check_writable()?;
        self.out.extend_from_slice(wire);
        Ok(())
    }

    /// Ready once the buffer has room for another frame (writing what it gathered if it is full).
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        if self.out.len() >= WRITE_BUFFER_BYTES {
            ready!(self.poll_write_out(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    /// Writes the whole buffer into `io`, then frees it.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        let mut written = 0;
        while written < self.out.len() {
            match Pin::new(&mut self.io).poll_write(cx, &self.out[written..]) {
                Poll::Ready(Ok(0)) => {
                    self.out.drain(..written);
                    return Poll::Ready(Err(io::Error::from(io::ErrorKind::WriteZero).into()));
                }
                Poll::Ready(Ok(n)) => written += n,
                Poll::Ready(Err(err)) => {
                    self.out.drain(..written);
                    return Poll::Ready(Err(err.into()));
                }
                Poll::Pending => {
                    self.out.drain(..written);
                    return Poll::Pending;
                }
            }
        }
        self.out = Vec::new();
        Poll::Ready(Ok(()))
    }

    /// Moves what tungstenite queued (its answer to a ping or a close) into the buffer.
    fn take_replies(&mut self) {
        // Errors are the close handshake's end, which the next read reports.
        let _ = self.context.flush(&mut Buffer(&mut self.out));
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for Socket<S> {
    type Item = Result<Message, WsError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        if !this.out.is_empty() {
            // What the socket did not take of an earlier answer (a pong, a close reply) goes out first, as
            // tungstenite's own read did: a session that only waits would otherwise keep it until its next flush.
            // And while the buffer is full nothing more is read, so a client that sends pings and does not read
            // its pongs holds the server to the buffer's size plus one answer.
            match this.poll_write_out(cx) {
                Poll::Ready(Err(err)) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(err)));
                }
                Poll::Pending if this.out.len() >= WRITE_BUFFER_BYTES => return Poll::Pending,
                _ => {}
            }
        }
        let read = this.context.read(&mut Blocking { io: &mut this.io, out: Buffer(&mut this.out), cx });
        match read {
            Ok(message) => {
                if matches!(message, Message::Ping(_) | Message::Close(_)) {
                    // Answered at once, as far as the socket takes it now; the rest goes with the next flush.
                    this.take_replies();
                    let _ = this.poll_write_out(cx);
                }
                Poll::Ready(Some(Ok(message)))
            }
            Err(WsError::Io(err)) if err.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
            Err(err) => {
                this.ended = true;
                match err {
                    WsError::AlreadyClosed | WsError::ConnectionClosed => Poll::Ready(None),
                    err => Poll::Ready(Some(Err(err))),
                }
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<Message> for Socket<S> {
    type Error = WsError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        self.get_mut().poll_room(cx)
    }

    fn start_send(self: Pin<&mut Self>, message: Message) -> Result<(), WsError> {
        let this = self.get_mut();
        this.check_writable()?;
        let frame = match message {
            Message::Text(text) => Frame::message(text, OpCode::Data(Data::Text), true),
            Message::Binary(data) => Frame::message(data, OpCode::Data(Data::Binary), true),
            Message::Ping(data) => Frame::ping(data),
            // A close changes tungstenite's state (no frame may follow it), and a pong or a raw frame is rare:
            // tungstenite writes them.
            message => {
                let mut out = Buffer(&mut this.out);
                this.context.write(&mut out, message)?;
                return this.context.flush(&mut out).or_else(|err| match err {
                    WsError::ConnectionClosed => Ok(()),
                    err => Err(err),
                });
            }
        };
        frame.format(&mut this.out)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        let this = self.get_mut();
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.io).poll_flush(cx).map_err(WsError::from)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx).map_err(WsError::from)
    }
}

/// The connection as tungstenite's blocking `Read + Write` sees it: a read that would wait is `WouldBlock` (with
/// `cx`'s waker registered), and what tungstenite writes goes into the socket's buffer, behind what is there.
struct Blocking<'a, 'b, S> {
    io: &'a mut S,
    out: Buffer<'a>,
    cx: &'a mut Context<'b>,
}

impl<S: AsyncRead + Unpin> Read for Blocking<'_, '_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut buf = ReadBuf::new(buf);
        match Pin::new(&mut *self.io).poll_read(self.cx, &mut buf) {
            Poll::Ready(Ok(())) => Ok(buf.filled().len()),
            Poll::Ready(Err(err)) => Err(err),
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl<S> Write for Blocking<'_, '_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The socket's buffer as tungstenite's `Read + Write` sees it when it only writes (a close, a pong, its answers
/// queued by a read): it takes everything, and has nothing to read.
struct Buffer<'a>(&'a mut Vec<u8>);

impl Read for Buffer<'_> {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }
}

impl Write for Buffer<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    fn socket() -> (Socket<DuplexStream>, DuplexStream) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        (Socket::new(server, WebSocketConfig::default()), client)
    }

    /// A masked client frame of `opcode` carrying `payload` (under 126 bytes).
    fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut frame = vec![0x80 | opcode, 0x80 | payload.len() as u8];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        frame
    }

    async fn read_exactly(client: &mut DuplexStream, n: usize) -> Vec<u8> {
        let mut got = vec![0u8; n];
        client.read_exact(&mut got).await.unwrap();
        got
    }

    #[tokio::test]
    async fn frames_go_out_in_the_order_they_were_sent_and_the_buffer_is_freed_once_written() {
        let (mut socket, mut client) = socket();
        socket.feed(Message::text("hi")).await.unwrap();
        socket.feed_wire(&[0x81, 3, b'a', b'b', b'c']).await.unwrap();
        socket.feed(Message::Ping(Default::default())).await.unwrap();
        socket.flush().await.unwrap();
        assert_eq!(socket.out.capacity(), 0);
        assert_eq!(read_exactly(&mut client, 11).await, [0x81, 2, b'h', b'i', 0x81, 3, b'a', b'b', b'c', 0x89, 0]);
    }

    #[tokio::test]
    async fn a_client_ping_is_answered_with_its_payload_when_it_is_read() {
        let (mut socket, mut client) = socket();
        client.write_all(&client_frame(0x9, b"abc")).await.unwrap();
        assert!(matches!(socket.next().await, Some(Ok(Message::Ping(p))) if &p[..] == b"abc"));
        assert_eq!(read_exactly(&mut client, 5).await, [0x8a, 3, b'a', b'b', b'c']);
    }

    #[tokio::test]
    async fn a_client_close_is_answered_and_ends_the_stream() {
        let (mut socket, mut client) = socket();
        client.write_all(&client_frame(0x8, &1000u16.to_be_bytes())).await.unwrap();
        assert!(matches!(socket.next().await, Some(Ok(Message::Close(_)))));
        assert_eq!(read_exactly(&mut client, 4).await, [0x88, 2, 0x03, 0xe8]);
        assert!(socket.next().await.is_none());
        assert!(socket.send(Message::text("late")).await.is_err());
    }

    #[tokio::test]
    async fn a_close_sent_refuses_later_frames() {
        let (mut socket, mut client) = socket();
        socket.send(Message::Close(None)).await.unwrap();
        assert_eq!(read_exactly(&mut client, 2).await, [0x88, 0]);
        assert!(socket.feed_wire(&[0x81, 0]).await.is_err());
    }

    #[tokio::test]
    async fn a_peer_that_stops_reading_holds_at_most_the_buffer_and_one_frame() {
        let (client, server) = tokio::io::duplex(1024);
        let mut socket = Socket::new(server, WebSocketConfig::default());
        let frame = vec![b'x'; 4096];
        let mut fed = 0;
        loop {
            let feeding = tokio::time::timeout(std::time::Duration::from_millis(50), socket.feed_wire(&frame));
            match feeding.await {
                Ok(done) => done.unwrap(),
                Err(_) => break,
            }
            fed += 1;
            assert!(fed < 100, "a full buffer waits");
        }
        assert!(socket.out.len() < WRITE_BUFFER_BYTES + frame.len());
        drop(client);
    }

    /// Every ping read appends its pong to the buffer; a client that sends pings and never reads must not grow it
    /// past its size (tungstenite bounded its answers by `max_write_buffer_size`): reading stops instead.
    #[tokio::test(start_paused = true)]
    async fn a_ping_flood_from_a_client_that_does_not_read_is_bounded() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut socket = Socket::new(server, WebSocketConfig::default());
        let pings = 1000;
        let writer = tokio::spawn(async move {
            for _ in 0..pings {
                client.write_all(&client_frame(0x9, &[b'p'; 125])).await.unwrap();
            }
            client // kept open, never read
        });
        let mut read = 0;
        while let Ok(Some(Ok(message))) = tokio::time::timeout(std::time::Duration::from_secs(1), socket.next()).await {
            assert!(matches!(message, Message::Ping(_)));
            read += 1;
        }
        assert!(read < pings, "reading stops while the pongs cannot be written");
        writer.abort();
        assert!(
            socket.out.len() <= WRITE_BUFFER_BYTES + 1024,
            "out holds {} bytes of pongs after {pings} pings",
            socket.out.len()
        );
    }

    /// A pong the socket could not take whole when its ping was read goes out as the peer reads, while the session
    /// only waits for the next frame (tungstenite's own read retried it, through `unflushed_additional`).
    #[tokio::test]
    async fn a_pong_left_half_written_goes_out_once_the_peer_reads() {
        let (client, server) = tokio::io::duplex(8);
        let mut socket = Socket::new(server, WebSocketConfig::default());
        let writer = tokio::spawn(async move {
            let mut client = client;
            client.write_all(&client_frame(0x9, &[b'p'; 100])).await.unwrap();
            client
        });
        assert!(matches!(socket.next().await, Some(Ok(Message::Ping(_)))));
        let mut client = writer.await.unwrap();
        // The session goes back to waiting on the next frame, as `step` does.
        let waiting = tokio::spawn(async move {
            let _ = socket.next().await;
            socket
        });
        let got = tokio::time::timeout(std::time::Duration::from_secs(1), read_exactly(&mut client, 102)).await;
        waiting.abort();
        assert!(got.is_ok(), "the pong's rest was never written while the session waited");
    }
}
