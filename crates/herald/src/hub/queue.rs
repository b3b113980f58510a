//! A connection's queue of live messages (and changes of presence): bounded, never waits on the sending side, and
//! small when idle.
//!
//! The subscriber registry pushes with [`QueueSender::try_send`] under a channel's lock; the connection's task
//! takes messages out with [`QueueReceiver::recv`]. Why not tokio's `mpsc`: its bounded channel costs about
//! 800 bytes per connection before the first message (a cache-padded channel and a first block of 32 slots),
//! most of an idle SSE subscriber's budget. This one is a `VecDeque` under a mutex: nothing is allocated before
//! the first message, and the memory of a burst is given back once the queue is drained.
//!
//! Policy: at `capacity` queued messages `try_send` refuses with [`TrySendError::Full`] and drops the message
//! (the caller marks the connection as a slow consumer, which disconnects it; the client resumes from its
//! cursor); once the receiver is gone it refuses with [`TrySendError::Closed`].
//!
//! With `direct_writes`, the queue also holds what its connection lent to the fan-out (`direct.rs`): a message
//! is offered to the lent socket first, under this lock, and queued only when the socket cannot take it now.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use tokio::net::TcpStream;

use super::direct::{Direct, DirectWire, Positions, Wrote};
use crate::encoded::EncodedMessage;
use crate::engine::presence::PresenceEvent;

/// What a queue holds: a live message, or a change of a channel's members.
#[derive(Debug, Clone)]
pub(crate) enum Queued {
    /// A stored message.
    Message(Arc<EncodedMessage>),
    /// A member joined or left.
    Presence(Arc<PresenceEvent>),
}

/// Slots a drained queue may keep; a larger buffer (left by a burst) is freed.
const KEEP_SLOTS: usize = 8;

/// A queue holding at most `capacity` messages (at most `u32::MAX`: more is not a bound).
pub(crate) fn queue(capacity: usize) -> (QueueSender, QueueReceiver) {
    let capacity = u32::try_from(capacity).unwrap_or(u32::MAX);
    let state = State { capacity, ..State::default() };
    let shared = Arc::new(Shared { state: Mutex::new(state) });
    (QueueSender(shared.clone()), QueueReceiver(shared))
}

/// Why a message was not queued.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TrySendError {
    /// The queue holds `capacity` messages.
    Full,
    /// The receiver is gone.
    Closed,
}

/// What [`QueueSender::offer`] did with a message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Offered {
    /// Queued, and the receiver woken.
    Queued,
    /// Written into the lent socket by the caller (the fan-out).
    Written,
    /// The lent socket had it already: dropped.
    Skipped,
}

/// The sending side; cheap to clone.
#[derive(Clone)]
pub(crate) struct QueueSender(Arc<Shared>);

/// The receiving side, owned by the connection.
pub(crate) struct QueueReceiver(Arc<Shared>);

struct Shared {
    state: Mutex<State>,
}

/// Every queue is one allocation of 88 bytes, as before the `direct` slot: `capacity` is a `u32` beside
/// `closed`, where a `usize` outside the lock would take a word of its own.
#[derive(Default)]
struct State {
    messages: VecDeque<Queued>,
    /// The receiver's task, waiting for a message.
    waker: Option<Waker>,
    /// The connection's socket, when it may be lent to the fan-out (boxed: most queues have none).
    direct: Option<Box<Direct>>,
    capacity: u32,
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned queue is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl QueueSender {
    /// Queues `message` without waiting.
    #[cfg(test)]
    pub(crate) fn try_send(&self, message: Queued) -> Result<(), TrySendError> {
        self.offer(None, || message).map(|_| ())
    }

    /// Writes `direct` into the lent socket when it may (see `direct.rs`), or queues `item()`, without waiting.
    /// The write happens under the queue's lock: the connection cannot take its socket back meanwhile.
    pub(crate) fn offer(
        &self,
        direct: Option<&EncodedMessage>,
        item: impl FnOnce() -> Queued,
    ) -> Result<Offered, TrySendError> {
        let (waker, offered) = 'locked: {
            let mut guard = self.0.lock();
            // Through a plain reference, so that the socket and the waker are borrowed apart.
            let state = &mut *guard;
            if state.closed {
                return Err(TrySendError::Closed);
            }
            let nothing_queued = state.messages.is_empty();
            let mut returned = false;
            if let Some(lent) = state.direct.as_mut().filter(|d| d.is_lent()) {
                match direct {
                    Some(message) if nothing_queued => match lent.write(message) {
                        Wrote::Delivered => {
                            // A partial write gave the socket back: the connection must wake to write its rest.
                            let waker = if lent.is_lent() { None } else { state.waker.take() };
                            break 'locked (waker, Ok(Offered::Written));
                        }
                        Wrote::Skipped => return Ok(Offered::Skipped),
                        Wrote::NotNow => {}
                    },
                    _ => lent.not_now(),
                }
                returned = true;
            }
            if state.messages.len() >= state.capacity as usize {
                // The lend ended without a message: the connection still wakes to take its socket back.
                let waker = if returned { state.waker.take() } else { None };
                break 'locked (waker, Err(TrySendError::Full));
            }
            state.messages.push_back(item());
            (state.waker.take(), Ok(Offered::Queued))
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        offered
    }
}

/// A handle on a connection's lent socket for the code that writes it: ends the lend before the connection's
/// own bytes go out.
#[derive(Clone)]
pub(crate) struct DirectHandle(Arc<Shared>);

impl DirectHandle {
    /// Takes the socket back before a write of the connection's own; returns the rest of a partial write of the
    /// fan-out, which must go out first. Where the channels stand waits for the subscription's next look.
    pub(crate) fn take_rest(&self) -> Option<Bytes> {
        self.0.lock().direct.as_mut().and_then(|d| d.take_rest())
    }
}

impl QueueReceiver {
    /// Attaches the connection's plain-TCP socket, which [`QueueReceiver::lend`] may then lend to the fan-out.
    pub(crate) fn attach(&mut self, socket: Arc<TcpStream>, wire: DirectWire) -> DirectHandle {
        self.0.lock().direct = Some(Box::new(Direct::new(socket, wire)));
        DirectHandle(self.0.clone())
    }

    /// Lends the attached socket to the fan-out with where each channel stands, if nothing is queued, nothing is
    /// left of a partial write and the last lend was taken back. Returns whether it did.
    pub(crate) fn lend(&mut self, positions: impl FnOnce() -> Positions) -> bool {
        let mut state = self.0.lock();
        if !state.messages.is_empty() {
            return false;
        }
        match state.direct.as_mut() {
            Some(direct) if !direct.is_lent() && !direct.has_returned() => direct.lend(positions()),
            _ => false,
        }
    }

    /// Takes the socket back: where each channel stands now, if it was lent since the last look.
    pub(crate) fn take_positions(&mut self) -> Option<Positions> {
        self.0.lock().direct.as_mut().and_then(|d| d.take_positions())
    }

    /// Takes the socket back for its writer, as [`DirectHandle::take_rest`] does.
    pub(crate) fn take_rest(&mut self) -> Option<Bytes> {
        self.0.lock().direct.as_mut().and_then(|d| d.take_rest())
    }

    /// The next message, waiting for one; `None` when the fan-out gave the lent socket back with nothing queued
    /// (the connection must take it back). Cancel-safe: a message is only taken by the poll that returns it.
    pub(crate) async fn recv(&mut self) -> Option<Queued> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next message if one is queued.
    pub(crate) fn try_recv(&mut self) -> Option<Queued> {
        let mut state = self.0.lock();
        let message = state.messages.pop_front();
        state.release_if_drained();
        message
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Queued>> {
        let mut state = self.0.lock();
        if let Some(message) = state.messages.pop_front() {
            state.release_if_drained();
            return Poll::Ready(Some(message));
        }
        if state.direct.as_ref().is_some_and(|d| d.has_returned()) {
            return Poll::Ready(None);
        }
        match &state.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => state.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl State {
    fn release_if_drained(&mut self) {
        if self.messages.is_empty() && self.messages.capacity() > KEEP_SLOTS {
            self.messages = VecDeque::new();
        }
    }
}

impl Drop for QueueReceiver {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.closed = true;
        // Senders may outlive the receiver a little (they are removed from the registry after it): free the
        // messages now.
        state.messages = VecDeque::new();
        state.waker = None;
        // The fan-out writes nothing more, and the socket closes with the connection.
        state.direct = None;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use herald_proto::{ChannelName, EventName, Message, Position};

    use super::*;

    fn message(offset: u64) -> Queued {
        Queued::Message(EncodedMessage::new(Message {
            channel: ChannelName::new("a").unwrap(),
            position: Position::new(1, offset),
            event: EventName::default_event(),
            data: Bytes::from_static(b"1"),
            time_ms: 0,
        }))
    }

    fn offset(queued: &Queued) -> u64 {
        match queued {
            Queued::Message(message) => message.message.position.offset,
            Queued::Presence(_) => 0,
        }
    }

    #[test]
    fn messages_come_out_in_order_until_the_capacity_then_full() {
        let (sender, mut receiver) = queue(3);
        for n in 1..=3 {
            assert_eq!(sender.try_send(message(n)), Ok(()));
        }
        assert_eq!(sender.try_send(message(4)), Err(TrySendError::Full));
        let taken: Vec<u64> = std::iter::from_fn(|| receiver.try_recv()).map(|m| offset(&m)).collect();
        assert_eq!(taken, [1, 2, 3]);
        assert_eq!(sender.try_send(message(5)), Ok(()), "room again once drained");
    }

    #[test]
    fn a_dropped_receiver_closes_the_queue_and_frees_its_messages() {
        let (sender, receiver) = queue(3);
        let Queued::Message(kept) = message(1) else { unreachable!() };
        sender.try_send(Queued::Message(kept.clone())).unwrap();
        drop(receiver);
        assert_eq!(Arc::strong_count(&kept), 1, "the queue let go of the message");
        assert_eq!(sender.try_send(message(2)), Err(TrySendError::Closed));
    }

    #[test]
    fn a_burst_leaves_no_buffer_behind_once_drained() {
        let (sender, mut receiver) = queue(1000);
        for n in 1..=500 {
            sender.try_send(message(n)).unwrap();
        }
        while receiver.try_recv().is_some() {}
        assert_eq!(sender.0.lock().messages.capacity(), 0);
        sender.try_send(message(501)).unwrap();
        assert!(receiver.try_recv().is_some());
        assert!(sender.0.lock().messages.capacity() <= KEEP_SLOTS, "a small buffer is kept");
    }

    #[tokio::test(start_paused = true)]
    async fn recv_waits_for_a_message_sent_from_another_task() {
        let (sender, mut receiver) = queue(3);
        let send = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            sender.try_send(message(7)).unwrap();
            sender
        });
        assert_eq!(offset(&receiver.recv().await.unwrap()), 7);
        let _sender = send.await.unwrap();
    }

    #[tokio::test]
    async fn a_recv_dropped_before_a_message_takes_nothing() {
        let (sender, mut receiver) = queue(3);
        assert!(tokio::time::timeout(Duration::from_millis(10), receiver.recv()).await.is_err());
        sender.try_send(message(1)).unwrap();
        assert_eq!(offset(&receiver.recv().await.unwrap()), 1);
    }
}
