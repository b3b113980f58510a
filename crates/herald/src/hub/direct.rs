//! Writing from the fan-out (`direct_writes`): a connection lends its plain-TCP socket to the fan-out while it has
//! nothing of its own to write, and the fan-out writes the next message of a channel straight into it, with one
//! `write` of the shared pre-encoded bytes, instead of queueing it and waking the connection's task (the one
//! task wake-up per subscriber per message that kept the cost per delivery above the machine's floor,
//! docs/BENCHMARKS.md).
//!
//! The rules that keep delivery exactly-once and in order, and the socket written by one party at a time:
//! - A connection lends its socket ([`Direct::lend`]) only while everything it wrote is flushed, its queue is
//!   empty and nothing is left of an earlier partial write; it hands over where each of its channels stands
//!   (its trackers' positions) with it. All of this lives under its queue's lock, which the fan-out holds while
//!   it writes, so the connection and the fan-out never write at once.
//! - The fan-out writes a message only if the lent position of its channel says it is exactly the next one
//!   ([`Tracker::check`]); a message already delivered is dropped; anything else (a gap, a channel the lend does
//!   not know, a change of members, a non-empty queue) goes to the queue as without direct writes.
//! - Any write that does not complete (`WouldBlock`, a partial write, an error) ends the lend: a partial write's
//!   unwritten rest is kept here, and the connection writes it before any byte of its own.
//! - The connection ends the lend before it writes anything ([`Direct::take_rest`], by its writer) or reads its
//!   trackers ([`Direct::take_positions`], by its subscription, which takes back the positions the fan-out
//!   moved).

use std::sync::Arc;

use bytes::Bytes;
use herald_proto::{ChannelName, Position};
use tokio::net::TcpStream;

use super::tracker::{Tracker, Verdict};
use crate::encoded::EncodedMessage;

/// How a lent socket frames a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DirectWire {
    /// A WebSocket text frame of the message's shared `message` frame.
    WebSocket,
    /// An SSE event of a one-channel stream: `id:` the message's cursor, then its shared event body.
    Sse {
        /// `envelope=true`: the body is the JSON envelope.
        envelope: bool,
    },
}

/// Where each channel of a connection stands: what it has delivered, for the fan-out to judge the next message.
pub(crate) type Positions = Vec<(ChannelName, Position)>;

/// Who may write the socket now.
enum Lend {
    /// The connection: it is writing, or has something to write.
    Kept,
    /// The fan-out, with where each channel stands (moved by each message it writes).
    Lent(Positions),
    /// The connection again, after the fan-out gave the socket back; the positions wait for it to take them.
    Returned(Positions),
}

/// A connection's socket as its queue knows it: whether it is lent, and what a partial write left.
pub(crate) struct Direct {
    socket: Arc<TcpStream>,
    wire: DirectWire,
    lend: Lend,
    /// The unwritten end of a message the fan-out began to write, for the connection to write first.
    rest: Option<Bytes>,
}

/// What the fan-out did with a message offered to a lent socket.
pub(crate) enum Wrote {
    /// Written whole, or begun (its rest kept for the connection): delivered.
    Delivered,
    /// Delivered before: dropped.
    Skipped,
    /// Not written: the lend ended, and the message goes to the queue.
    NotNow,
}

impl Direct {
    pub(crate) fn new(socket: Arc<TcpStream>, wire: DirectWire) -> Self {
        Self { socket, wire, lend: Lend::Kept, rest: None }
    }

    /// Whether the fan-out holds the socket.
    pub(crate) fn is_lent(&self) -> bool {
        matches!(self.lend, Lend::Lent(_))
    }

    /// Whether the fan-out gave the socket back with something the connection has not taken yet.
    pub(crate) fn has_returned(&self) -> bool {
        matches!(self.lend, Lend::Returned(_))
    }

    /// Lends the socket with `positions`, unless a rest is left to write or positions are still to be taken.
    /// The caller (the queue) checks that nothing is queued.
    pub(crate) fn lend(&mut self, positions: Positions) -> bool {
        if self.rest.is_some() || !matches!(self.lend, Lend::Kept) {
            return false;
        }
        self.lend = Lend::Lent(positions);
        true
    }

    /// Takes the socket back for the subscription: where each channel stands, if it was lent since the last
    /// look. A rest of a partial write stays for the writer ([`Direct::take_rest`]).
    pub(crate) fn take_positions(&mut self) -> Option<Positions> {
        match std::mem::replace(&mut self.lend, Lend::Kept) {
            Lend::Kept => None,
            Lend::Lent(positions) | Lend::Returned(positions) => Some(positions),
        }
    }

    /// Takes the socket back for the writer, before a write of the connection's own: the rest of a partial write
    /// of the fan-out, which must go out first. Where the channels stand waits for the subscription's next look.
    pub(crate) fn take_rest(&mut self) -> Option<Bytes> {
        self.give_back();
        self.rest.take()
    }

    /// Gives the socket back to the connection.
    fn give_back(&mut self) {
        if let Lend::Lent(positions) = std::mem::replace(&mut self.lend, Lend::Kept) {
            self.lend = Lend::Returned(positions);
        }
    }

    /// Ends the lend without writing: `message` (or a change of members) goes to the queue.
    pub(crate) fn not_now(&mut self) {
        self.give_back();
    }

    /// Writes `message` if the socket is lent and it is the next one of its channel. Never waits.
    pub(crate) fn write(&mut self, message: &EncodedMessage) -> Wrote {
        let Lend::Lent(positions) = &mut self.lend else { return Wrote::NotNow };
        let at = message.message.position;
        let Some(position) = positions.iter_mut().find(|(c, _)| *c == message.message.channel).map(|(_, p)| p) else {
            self.give_back();
            return Wrote::NotNow;
        };
        match Tracker::new(*position).check(at) {
            Verdict::Skip => return Wrote::Skipped,
            Verdict::CatchUp => {
                self.give_back();
                return Wrote::NotNow;
            }
            Verdict::Deliver => {}
        }
        let wire = match self.wire {
            DirectWire::WebSocket => message.ws_wire(),
            DirectWire::Sse { envelope } => message.sse_event(envelope),
        };
        match self.socket.try_write(wire) {
            Ok(n) if n == wire.len() => {
                *position = at;
                Wrote::Delivered
            }
            Ok(n) if n > 0 => {
                *position = at;
                self.rest = Some(wire.slice(n..));
                self.give_back();
                Wrote::Delivered
            }
            // Nothing written: `WouldBlock`, or an error the connection meets on its own next write.
            Ok(_) | Err(_) => {
                self.give_back();
                Wrote::NotNow
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message of `pad` bytes of data at offset `n` of channel `a`.
    fn message(n: u64, pad: usize) -> Arc<EncodedMessage> {
        EncodedMessage::new(herald_proto::Message {
            channel: ChannelName::new("a").unwrap(),
            position: Position::new(1, n),
            event: herald_proto::EventName::default_event(),
            data: Bytes::from(format!("\"{}\"", "x".repeat(pad))),
            time_ms: 0,
        })
    }

    /// The offsets of the whole text frames in `bytes`; panics on a frame cut short or anything else.
    fn frame_offsets(mut bytes: &[u8]) -> Vec<u64> {
        let mut offsets = Vec::new();
        while !bytes.is_empty() {
            assert_eq!(bytes[0], 0x81, "a final text frame");
            let (len, header) = match bytes[1] {
                126 => (usize::from(u16::from_be_bytes([bytes[2], bytes[3]])), 4),
                127 => (u64::from_be_bytes(bytes[2..10].try_into().unwrap()) as usize, 10),
                short => (usize::from(short), 2),
            };
            let frame: serde_json::Value = serde_json::from_slice(&bytes[header..header + len]).unwrap();
            offsets.push(frame["offset"].as_u64().unwrap());
            bytes = &bytes[header + len..];
        }
        offsets
    }

    #[tokio::test]
    async fn a_lent_socket_that_fills_up_gets_whole_frames_once_the_rest_of_a_partial_write_is_written() {
        use super::super::queue::{queue, Offered, Queued};
        use tokio::io::AsyncReadExt;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let server = Arc::new(listener.accept().await.unwrap().0);
        let (sender, mut receiver) = queue(1000);
        let writer = receiver.attach(server.clone(), DirectWire::WebSocket);
        let channel = ChannelName::new("a").unwrap();
        assert!(receiver.lend(|| vec![(channel.clone(), Position::new(1, 0))]));
        // Nobody reads: the fan-out writes until the socket's buffers are full, then queues.
        let mut offered = 0;
        loop {
            offered += 1;
            let m = message(offered, 64 * 1024);
            match sender.offer(Some(&m), || Queued::Message(m.clone())).unwrap() {
                Offered::Written => {}
                Offered::Queued => break,
                Offered::Skipped => panic!("nothing was delivered twice"),
            }
            assert!(offered < 10_000, "a socket nobody reads fills up");
        }
        let written = receiver.take_positions().unwrap()[0].1.offset;
        assert_eq!(written, offered - 1, "every message but the queued one went to the socket");
        assert!(matches!(receiver.try_recv(), Some(Queued::Message(m)) if m.message.position.offset == offered));
        // The connection writes the rest of a partial write first, then its own copy of the queued message.
        let rest = writer.take_rest().unwrap_or_default();
        let own = message(offered, 64 * 1024).ws_wire().clone();
        let reading = tokio::spawn(async move {
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            got
        });
        // The queue lets go of the socket with its receiver.
        drop(receiver);
        let mut server = Arc::try_unwrap(server).map_err(|_| ()).ok();
        let socket = server.as_mut().unwrap();
        tokio::io::AsyncWriteExt::write_all(socket, &rest).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(socket, &own).await.unwrap();
        tokio::io::AsyncWriteExt::shutdown(socket).await.unwrap();
        drop(server);
        assert_eq!(frame_offsets(&reading.await.unwrap()), (1..=offered).collect::<Vec<_>>());
    }
}
