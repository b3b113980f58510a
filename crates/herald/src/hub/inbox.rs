//! A subscriber's inbox: the one bounded queue that live messages of all its channels are handed to.
//!
//! Registering a channel here (with the subscriber registry, and with the engine through `watch`) is what makes
//! the live feed start; reading it is the [`Subscription`](super::Subscription)'s job, which owns its inbox and
//! keeps the list of its channels (registered once each, and unregistered when it ends).

use std::sync::Arc;

use herald_proto::ChannelName;
use tokio_util::sync::CancellationToken;

use super::direct::{DirectWire, Positions};
use super::queue::{DirectHandle, QueueReceiver, QueueSender, Queued};
use super::subscribers::Subscriber;
use super::Hub;
use crate::metrics::{ConnectionGuard, Transport};

/// A subscriber's registration for live messages and its queue of them.
pub(crate) struct Inbox {
    id: u64,
    queue: QueueSender,
    receiver: QueueReceiver,
    slow: CancellationToken,
    transport: Transport,
    /// A socket is attached, which the subscription may lend to the fan-out. Here rather than in the
    /// subscription: this struct has room for it.
    lends: bool,
    _guard: ConnectionGuard,
}

impl Inbox {
    pub(super) fn new(hub: &Arc<Hub>, id: u64, transport: Transport, capacity: usize) -> Self {
        let (queue, receiver) = super::queue::queue(capacity);
        Self {
            id,
            queue,
            receiver,
            slow: CancellationToken::new(),
            transport,
            lends: false,
            _guard: hub.metrics.connection(transport),
        }
    }

    /// Starts queueing live messages of `channel`; completes once no message stored from now on can be missed,
    /// so history read afterwards joins the live feed without a gap. Called once per channel.
    pub(super) async fn subscribe(&mut self, hub: &Hub, channel: &ChannelName) {
        hub.subscribers.add(channel, self.subscriber());
        hub.metrics.subscribed(channel);
        hub.occupancy.changed(channel);
        hub.engine.watch(channel).await;
    }

    /// Stops queueing live messages of `channel`, which [`Inbox::subscribe`] registered.
    pub(super) fn unsubscribe(&mut self, hub: &Hub, channel: &ChannelName) {
        hub.subscribers.remove(channel, self.id);
        hub.metrics.unsubscribed(channel);
        hub.occupancy.changed(channel);
        hub.engine.unwatch(channel);
    }

    /// Starts queueing the changes of `channel`'s members (a channel this inbox is subscribed to, so that its
    /// node receives them).
    pub(super) fn receive_presence(&mut self, hub: &Hub, channel: &ChannelName) {
        hub.presence_followers.add(channel, self.subscriber());
    }

    /// Stops queueing the changes of `channel`'s members.
    pub(super) fn stop_presence(&mut self, hub: &Hub, channel: &ChannelName) {
        hub.presence_followers.remove(channel, self.id);
    }

    fn subscriber(&self) -> Subscriber {
        Subscriber {
            connection: self.id,
            queue: self.queue.clone(),
            slow: self.slow.clone(),
            transport: self.transport,
        }
    }

    /// The next live message or change of members; `None` when the fan-out gave a lent socket back with nothing
    /// queued. Cancel-safe: it is only taken by the poll that returns it.
    pub(super) async fn recv(&mut self) -> Option<Queued> {
        self.receiver.recv().await
    }

    /// Attaches the connection's plain-TCP socket, for the fan-out to write into while it is lent.
    pub(super) fn attach(&mut self, socket: Arc<tokio::net::TcpStream>, wire: DirectWire) -> DirectHandle {
        self.lends = true;
        self.receiver.attach(socket, wire)
    }

    /// Whether a socket is attached.
    pub(super) fn lends(&self) -> bool {
        self.lends
    }

    /// Lends the attached socket with `positions`, when nothing is queued; returns whether it did.
    pub(super) fn lend(&mut self, positions: impl FnOnce() -> Positions) -> bool {
        self.receiver.lend(positions)
    }

    /// Takes the socket back: where each channel stands, if it was lent since the last look.
    pub(super) fn take_positions(&mut self) -> Option<Positions> {
        self.receiver.take_positions()
    }

    /// Takes the socket back for its writer: what a partial write of the fan-out left, to go out first.
    pub(super) fn take_rest(&mut self) -> Option<bytes::Bytes> {
        self.receiver.take_rest()
    }

    /// The next live message or change of members if one is queued.
    pub(super) fn try_recv(&mut self) -> Option<Queued> {
        self.receiver.try_recv()
    }

    /// The signal that the queue overflowed: the subscriber must disconnect.
    pub(super) fn slow_signal(&self) -> &CancellationToken {
        &self.slow
    }
}
