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

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

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

/// A queue holding at most `capacity` messages.
pub(crate) fn queue(capacity: usize) -> (QueueSender, QueueReceiver) {
    let shared = Arc::new(Shared { capacity, state: Mutex::default() });
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

/// The sending side; cheap to clone.
#[derive(Clone)]
pub(crate) struct QueueSender(Arc<Shared>);

/// The receiving side, owned by the connection.
pub(crate) struct QueueReceiver(Arc<Shared>);

struct Shared {
    capacity: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    messages: VecDeque<Queued>,
    /// The receiver's task, waiting for a message.
    waker: Option<Waker>,
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
    pub(crate) fn try_send(&self, message: Queued) -> Result<(), TrySendError> {
        let waker = {
            let mut state = self.0.lock();
            if state.closed {
                return Err(TrySendError::Closed);
            }
            if state.messages.len() >= self.0.capacity {
                return Err(TrySendError::Full);
            }
            state.messages.push_back(message);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }
}

impl QueueReceiver {
    /// The next message, waiting for one. Cancel-safe: a message is only taken by the poll that returns it.
    pub(crate) async fn recv(&mut self) -> Queued {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next message if one is queued.
    pub(crate) fn try_recv(&mut self) -> Option<Queued> {
        let mut state = self.0.lock();
        let message = state.messages.pop_front();
        state.release_if_drained();
        message
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Queued> {
        let mut state = self.0.lock();
        if let Some(message) = state.messages.pop_front() {
            state.release_if_drained();
            return Poll::Ready(message);
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
        assert_eq!(offset(&receiver.recv().await), 7);
        let _sender = send.await.unwrap();
    }

    #[tokio::test]
    async fn a_recv_dropped_before_a_message_takes_nothing() {
        let (sender, mut receiver) = queue(3);
        assert!(tokio::time::timeout(Duration::from_millis(10), receiver.recv()).await.is_err());
        sender.try_send(message(1)).unwrap();
        assert_eq!(offset(&receiver.recv().await), 1);
    }
}
