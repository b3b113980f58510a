//! A subscription: where history and the live feed are joined into "nothing lost, nothing twice", once, for
//! every transport.
//!
//! A subscription follows channels for one client: a WebSocket, an SSE stream, a held poll (with an inbox of
//! live messages), or a short poll (which only reads). Each channel is registered for live messages *before*
//! its history is read, so the two overlap; a [`Tracker`] per channel then judges every live message — deliver
//! it, skip it (already delivered), or catch up through history after a gap or a new epoch, which is also where
//! a reset is found. What a catch-up read beyond the batch a transport asked for waits in the subscription, so
//! batches stay bounded and nothing read is dropped.
//!
//! A transport reads as parse → authorize → [`Subscription::subscribe`] → encode → write, then loops over
//! [`Subscription::recv`] and [`Subscription::follow`]. The subscription also keeps the deadline of the
//! credentials it was opened with, so that every transport ends at the same instant.
//!
//! Presence joins the same way: [`Subscription::join`] makes the subscription's user a member of a channel it
//! follows (until it leaves, unsubscribes or ends, after the grace), and [`Subscription::members`] reads the
//! members and from then on hands their joins and leaves over as [`Item::Presence`], skipping the changes the
//! list already holds (by their sequence number), so the list and the changes join without a gap or a repeat.

use std::collections::VecDeque;
use std::sync::Arc;

use herald_proto::{ChannelName, Cursor, Position};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::direct::{DirectWire, Positions};
use super::inbox::Inbox;
use super::queue::DirectHandle;
use super::queue::Queued;
use super::tracker::{Tracker, Verdict};
use super::{Hub, HubError, Joined, Member, Members, PresenceError};
use crate::encoded::EncodedMessage;
use crate::engine::presence::PresenceEvent;
use crate::engine::Start;
use crate::metrics::{CatchUp, Transport};

/// What subscribing to a channel gave.
#[derive(Debug)]
pub struct Opened {
    /// History to replay, oldest first.
    pub messages: Vec<Arc<EncodedMessage>>,
    /// The start could not be honoured: messages were lost before these.
    pub reset: bool,
    /// The position right before the first replayed message: where the client stands before the replay.
    pub start: Position,
}

/// One thing to tell the client, in order.
#[derive(Debug)]
pub enum Item {
    /// Deliver this message.
    Message(Arc<EncodedMessage>),
    /// Messages of `channel` were lost; the channel continues from `from` (right before the next message of it).
    Reset {
        /// The channel.
        channel: ChannelName,
        /// Where the channel stands after the loss.
        from: Position,
    },
    /// A member joined or left a channel whose presence the subscription follows ([`Subscription::members`]).
    Presence(Arc<PresenceEvent>),
}

/// What [`Subscription::follow`] gave.
#[derive(Debug)]
pub struct Batch {
    /// What to tell the client, in order.
    pub items: Vec<Item>,
    /// The engine error that cut the batch short: the client must resume from its cursor to get the rest.
    pub error: Option<HubError>,
}

impl Batch {
    /// The items, or the error when there are none (for a request that answers once).
    pub fn into_result(self) -> Result<Vec<Item>, HubError> {
        match self.error {
            Some(err) if self.items.is_empty() => Err(err),
            _ => Ok(self.items),
        }
    }
}

/// What [`Subscription::recv`] waited for; hand it to [`Subscription::follow`].
#[derive(Debug)]
pub struct Live(Option<Queued>);

/// One followed channel.
struct Followed {
    channel: ChannelName,
    /// Everything the subscription has taken from the engine (delivered, or waiting in `pending`).
    tracker: Tracker,
    /// What the client has been handed.
    delivered: Position,
    /// What the subscription has of the channel's presence, when anything (boxed: most channels have none, and
    /// a fan-out walks through many subscriptions' channels).
    presence: Option<Box<FollowedPresence>>,
}

/// A followed channel's presence.
#[derive(Default)]
struct FollowedPresence {
    /// The presence sequence the client's list of members is at, while the subscription follows the presence.
    members_at: Option<u64>,
    /// The number of this subscription's presence on the channel, while it is a member.
    joined: Option<u64>,
}

impl Followed {
    fn members_at(&self) -> Option<u64> {
        self.presence.as_ref().and_then(|p| p.members_at)
    }

    fn joined(&self) -> Option<u64> {
        self.presence.as_ref().and_then(|p| p.joined)
    }

    /// Changes the channel's presence state, dropping it when nothing is left.
    fn set_presence(&mut self, change: impl FnOnce(&mut FollowedPresence)) {
        let presence = self.presence.get_or_insert_with(Box::default);
        change(presence);
        if presence.members_at.is_none() && presence.joined.is_none() {
            self.presence = None;
        }
    }
}

/// A client's subscription to some channels.
pub struct Subscription {
    hub: Arc<Hub>,
    /// Live messages; `None` for a subscription that only reads (a short poll).
    inbox: Option<Inbox>,
    channels: Vec<Followed>,
    /// Read by a catch-up, not handed over yet (oldest first).
    pending: VecDeque<Arc<EncodedMessage>>,
    deadline: Option<Instant>,
    /// A channel registered for live messages whose history read has not returned yet: unregistered on drop
    /// too, should the subscribe be cancelled half-way (its client left, shutdown).
    opening: Option<ChannelName>,
    /// A presence whose join has not returned yet: left on drop too, for the same reason.
    joining: Option<Box<(ChannelName, u64)>>,
}

impl Hub {
    /// A subscription that follows live messages: its channels' messages are queued (up to `connection_queue`)
    /// from the moment each is subscribed.
    pub fn subscription(self: &Arc<Self>, transport: Transport) -> Subscription {
        let id = self.next_connection.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let inbox = Inbox::new(self, id, transport, self.config.connection_queue);
        Subscription::new(self, Some(inbox))
    }

    /// A subscription that only reads history (a short poll): no live messages, no connection counted.
    pub fn reader(self: &Arc<Self>) -> Subscription {
        Subscription::new(self, None)
    }
}

impl Subscription {
    fn new(hub: &Arc<Hub>, inbox: Option<Inbox>) -> Self {
        Self {
            hub: hub.clone(),
            inbox,
            channels: Vec::new(),
            pending: VecDeque::new(),
            deadline: None,
            opening: None,
            joining: None,
        }
    }

    /// With `direct_writes`: attaches the connection's plain-TCP socket, which [`Subscription::lend`] lends to the
    /// fan-out whenever the connection has nothing to write. The handle is for whoever writes the socket: it must
    /// take the socket back before every write of its own ([`DirectHandle::take_rest`]). `None` without an
    /// inbox.
    pub(crate) fn attach_direct(
        &mut self,
        socket: Arc<tokio::net::TcpStream>,
        wire: DirectWire,
    ) -> Option<DirectHandle> {
        Some(self.inbox.as_mut()?.attach(socket, wire))
    }

    /// Whether a socket is attached ([`Subscription::attach_direct`]).
    pub(crate) fn lends(&self) -> bool {
        self.inbox.as_ref().is_some_and(Inbox::lends)
    }

    /// Takes the socket back for a writer that has no [`DirectHandle`] of its own (an SSE stream, which writes
    /// through its body): what a partial write of the fan-out left, which must go out before its next bytes.
    pub(crate) fn take_rest(&mut self) -> Option<bytes::Bytes> {
        self.inbox.as_mut().filter(|inbox| inbox.lends()).and_then(Inbox::take_rest)
    }

    /// Lends the attached socket to the fan-out, with where each channel stands, if the subscription has nothing
    /// to hand over (nothing queued, nothing read and waiting, no channel half-opened). The caller vouches that
    /// everything it wrote is flushed, and must [`Subscription::take_back`] when it wakes. Returns whether it
    /// lent it.
    pub(crate) fn lend(&mut self) -> bool {
        if !self.lends() || !self.pending.is_empty() || self.opening.is_some() || self.channels.is_empty() {
            return false;
        }
        let channels = &self.channels;
        let positions = || channels.iter().map(|f| (f.channel.clone(), f.tracker.position())).collect();
        self.inbox.as_mut().is_some_and(|inbox| inbox.lend(positions))
    }

    /// Takes the lent socket back, with what the fan-out delivered meanwhile. Every method that reads or moves
    /// the trackers does this first; a connection does it whenever it wakes.
    pub(crate) fn take_back(&mut self) {
        if !self.lends() {
            return;
        }
        let Some(positions) = self.inbox.as_mut().and_then(Inbox::take_positions) else { return };
        self.advance_to(positions);
    }

    /// Records what the fan-out wrote: each channel up to its position.
    fn advance_to(&mut self, positions: Positions) {
        for (channel, position) in positions {
            if let Some(followed) = self.channels.iter_mut().find(|f| f.channel == channel) {
                if followed.tracker.position() != position {
                    followed.tracker.advance(position);
                    followed.delivered = position;
                }
            }
        }
    }

    /// Follows `channel` from `start`: registers for its live messages first (when the subscription has an
    /// inbox), then reads at most `limit` messages of history. Subscribing again to a channel restarts it from
    /// `start`. When the read fails, the channel is not followed.
    pub async fn subscribe(&mut self, channel: &ChannelName, start: Start, limit: usize) -> Result<Opened, HubError> {
        self.take_back();
        let known = self.is_subscribed(channel);
        if let (Some(inbox), false) = (self.inbox.as_mut(), known) {
            // Set in the same poll that registers (the registration happens before `watch` first waits).
            self.opening = Some(channel.clone());
            inbox.subscribe(&self.hub, channel).await;
        }
        let read = self.hub.read(channel, start, limit).await;
        self.opening = None;
        let read = match read {
            Ok(read) => read,
            Err(err) => {
                if !known {
                    self.unregister(channel);
                }
                return Err(err);
            }
        };
        // Anything a catch-up left waiting for the channel predates the new start.
        self.pending.retain(|m| m.message.channel != *channel);
        let end = read.end();
        match self.channels.iter_mut().find(|f| f.channel == *channel) {
            Some(existing) => {
                existing.tracker = Tracker::new(end);
                existing.delivered = end;
            }
            None => {
                if self.channels.is_empty() {
                    // Most subscriptions follow one channel: room for exactly that one, not the four a first push
                    // makes room for (168 bytes of every idle connection).
                    self.channels.reserve_exact(1);
                }
                self.channels.push(Followed {
                    channel: channel.clone(),
                    tracker: Tracker::new(end),
                    delivered: end,
                    presence: None,
                });
            }
        }
        Ok(Opened { messages: read.messages, reset: read.reset, start: read.start })
    }

    /// Stops following `channel` (and, after the grace, being a member of it). Returns false if it was not
    /// followed.
    pub fn unsubscribe(&mut self, channel: &ChannelName) -> bool {
        self.take_back();
        let Some(i) = self.channels.iter().position(|f| f.channel == *channel) else { return false };
        let followed = self.channels.remove(i);
        self.pending.retain(|m| m.message.channel != *channel);
        self.end_presence(&followed);
        self.unregister(channel);
        true
    }

    /// Presents the user `member` (see [`super::member`]) on `channel`, which the subscription follows: the user
    /// is a member until the subscription leaves, unsubscribes or ends, and the grace has passed. Answers the
    /// members right after the join, and whether the user is new to the channel across the cluster (its join is
    /// then announced to the channel's other followers of presence, never to this subscription: when it follows
    /// the presence, its list moves to the answer's).
    pub async fn join(&mut self, channel: &ChannelName, member: &Member) -> Result<Joined, PresenceError> {
        let Some(i) = self.channels.iter().position(|f| f.channel == *channel).filter(|_| self.inbox.is_some()) else {
            return Err(PresenceError::NotSubscribed(channel.clone()));
        };
        if self.channels[i].joined().is_some() {
            return Err(PresenceError::AlreadyJoined(channel.clone()));
        }
        if let Some(joining) = self.joining.take() {
            // A join cancelled half-way, whose subscription lives on.
            self.hub.leave_later(&joining.0, joining.1);
        }
        let id = self.hub.next_presence_id();
        self.joining = Some(Box::new((channel.clone(), id)));
        let joined = self.hub.join(channel, id, member).await;
        self.joining = None;
        match &joined {
            Ok(joined) => {
                self.channels[i].set_presence(|p| {
                    p.joined = Some(id);
                    p.members_at = p.members_at.map(|at| at.max(joined.members.seq));
                });
            }
            // A full channel stored nothing; after an engine error the join may have been stored anyway.
            Err(PresenceError::Full { .. }) => {}
            Err(_) => self.hub.leave_later(channel, id),
        }
        joined
    }

    /// Stops being a member of `channel` (after the grace). Returns false if the subscription was not one.
    pub fn leave(&mut self, channel: &ChannelName) -> bool {
        let Some(followed) = self.channels.iter_mut().find(|f| f.channel == *channel) else { return false };
        let Some(id) = followed.joined() else { return false };
        followed.set_presence(|p| p.joined = None);
        self.hub.leave_later(channel, id);
        true
    }

    /// The members of `channel`, which the subscription follows; from now on their joins and leaves are handed
    /// over as [`Item::Presence`], in order with its messages, from right after this list.
    pub async fn members(&mut self, channel: &ChannelName) -> Result<Members, PresenceError> {
        let i = self.channels.iter().position(|f| f.channel == *channel);
        let (Some(i), Some(inbox)) = (i, self.inbox.as_mut()) else {
            return Err(PresenceError::NotSubscribed(channel.clone()));
        };
        let known = self.channels[i].members_at().is_some();
        if !known {
            // Registered before the read, as messages are: no change can fall between the list and the feed.
            inbox.receive_presence(&self.hub, channel);
        }
        match self.hub.members(channel).await {
            Ok(members) => {
                self.channels[i].set_presence(|p| p.members_at = Some(members.seq));
                Ok(members)
            }
            Err(err) => {
                if let (false, Some(inbox)) = (known, self.inbox.as_mut()) {
                    inbox.stop_presence(&self.hub, channel);
                }
                Err(err.into())
            }
        }
    }

    /// Whether the subscription is a member of `channel`.
    pub fn is_member(&self, channel: &ChannelName) -> bool {
        self.channels.iter().any(|f| f.channel == *channel && f.joined().is_some())
    }

    /// Ends what `followed` had of presence: its membership (after the grace) and the changes it received.
    fn end_presence(&mut self, followed: &Followed) {
        if let Some(id) = followed.joined() {
            self.hub.leave_later(&followed.channel, id);
        }
        if let (Some(_), Some(inbox)) = (followed.members_at(), self.inbox.as_mut()) {
            inbox.stop_presence(&self.hub, &followed.channel);
        }
    }

    /// Stops the live feed of `channel`.
    fn unregister(&mut self, channel: &ChannelName) {
        if let Some(inbox) = self.inbox.as_mut() {
            inbox.unsubscribe(&self.hub, channel);
        }
    }

    /// Whether `channel` is followed.
    pub fn is_subscribed(&self, channel: &ChannelName) -> bool {
        self.channels.iter().any(|f| f.channel == *channel)
    }

    /// The channels followed, in the order they were subscribed.
    pub fn channels(&self) -> impl Iterator<Item = &ChannelName> {
        self.channels.iter().map(|f| &f.channel)
    }

    /// How many channels are followed.
    pub fn len(&self) -> usize {
        self.channels.len()
    }

    /// Whether no channel is followed.
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    /// The position the client has been handed on each channel, in the order they were subscribed.
    pub fn cursor(&self) -> Cursor {
        let mut cursor = Cursor::new();
        for followed in &self.channels {
            cursor.set(followed.channel.clone(), followed.delivered);
        }
        cursor
    }

    /// Waits until there is something to follow: a live message, or messages a catch-up left waiting. Cancel-safe:
    /// nothing is taken by a wait that is dropped. A subscription without an inbox waits forever.
    pub async fn recv(&mut self) -> Live {
        if !self.pending.is_empty() {
            return Live(None);
        }
        match self.inbox.as_mut() {
            Some(inbox) => Live(inbox.recv().await),
            None => std::future::pending().await,
        }
    }

    /// Turns what [`Subscription::recv`] gave, and whatever else is queued, into at most `max` messages (and the
    /// resets before them) to deliver in order. When a catch-up read fails, the live message that needed it is
    /// dropped and its channel's tracker stays put: the batch ends there, with what was handed over before it and
    /// the error. A stream should then write the items and end, so that its client resumes from its cursor; a
    /// poll answers what it has (its cursor does not move past the message), or the error when it has nothing.
    pub async fn follow(&mut self, live: Live, max: usize) -> Batch {
        self.take_back();
        let mut batch = Batch { items: Vec::new(), error: None };
        let mut handed = 0;
        let mut next = live.0;
        while handed < max {
            if let Some(message) = self.pending.pop_front() {
                handed += 1;
                self.hand(&mut batch.items, message);
                continue;
            }
            let Some(live) = next.take().or_else(|| self.inbox.as_mut().and_then(Inbox::try_recv)) else { break };
            let live = match live {
                Queued::Message(live) => live,
                Queued::Presence(event) => {
                    handed += usize::from(self.hand_presence(&mut batch.items, event));
                    continue;
                }
            };
            match self.take(&mut batch.items, live).await {
                Ok(n) => handed += n,
                Err(err) => {
                    batch.error = Some(err);
                    break;
                }
            }
        }
        batch
    }

    /// Judges one live message: hands it over, skips it, or catches its channel up through history into
    /// `pending`, to be handed over by the caller's loop. Returns how many messages it handed over.
    async fn take(&mut self, items: &mut Vec<Item>, live: Arc<EncodedMessage>) -> Result<usize, HubError> {
        let at = live.message.position;
        let Some(i) = self.channels.iter().position(|f| f.channel == live.message.channel) else { return Ok(0) };
        match self.channels[i].tracker.check(at) {
            Verdict::Skip => {}
            Verdict::Deliver => {
                self.channels[i].tracker.advance(at);
                self.hand(items, live);
                return Ok(1);
            }
            Verdict::CatchUp => {
                let channel = live.message.channel.clone();
                let start = Start::After(self.channels[i].tracker.position());
                self.hub.metrics.catch_up_read(CatchUp::Subscriber);
                let read = self.hub.read(&channel, start, usize::MAX).await?;
                self.channels[i].tracker.advance(read.end());
                // Live messages are only taken once `pending` is empty, so what was read comes next, in order.
                if read.reset {
                    self.channels[i].delivered = read.start;
                    items.push(Item::Reset { channel, from: read.start });
                }
                self.pending.extend(read.messages);
            }
        }
        Ok(0)
    }

    /// Hands a change of members to the client if it follows the channel's presence and its list does not hold
    /// the change already. Returns whether it did.
    fn hand_presence(&mut self, items: &mut Vec<Item>, event: Arc<PresenceEvent>) -> bool {
        let Some(followed) = self.channels.iter_mut().find(|f| f.channel == event.channel) else { return false };
        match followed.presence.as_mut().and_then(|p| p.members_at.as_mut()) {
            Some(at) if event.seq > *at => {
                *at = event.seq;
                items.push(Item::Presence(event));
                true
            }
            _ => false,
        }
    }

    /// Hands `message` to the client.
    fn hand(&mut self, items: &mut Vec<Item>, message: Arc<EncodedMessage>) {
        if let Some(followed) = self.channels.iter_mut().find(|f| f.channel == message.message.channel) {
            followed.delivered = message.message.position;
        }
        items.push(Item::Message(message));
    }

    /// Completes when the inbox overflowed: the subscriber is too slow and must disconnect. Never, without an
    /// inbox. The future borrows nothing, so it can be awaited alongside [`Subscription::recv`].
    pub fn too_slow(&self) -> WaitForCancellationFutureOwned {
        self.slow_signal().cancelled_owned()
    }

    /// The signal behind [`Subscription::too_slow`], for whoever writes the subscriber's bytes: a write blocked on
    /// a peer that stopped reading must give up when it fires, or the connection never ends.
    pub fn slow_signal(&self) -> CancellationToken {
        self.inbox.as_ref().map(|i| i.slow_signal().clone()).unwrap_or_default()
    }

    /// When the credentials the subscription relies on stop being accepted (`None`: never).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Sets (or, with `None`, lifts) the deadline of the subscription's credentials.
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    /// Completes at the deadline, or never. The future borrows nothing, so it can be awaited alongside
    /// [`Subscription::recv`].
    pub fn expired(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let deadline = self.deadline;
        async move {
            match deadline {
                // Boxed: this wait is part of every connection's waiting state, and a timer inline would make each
                // idle connection keep room for one (about 110 bytes) whether it has a deadline or not.
                Some(at) => Box::pin(tokio::time::sleep_until(at)).await,
                None => std::future::pending().await,
            }
        }
    }

    /// The hub.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        for followed in std::mem::take(&mut self.channels) {
            self.end_presence(&followed);
            if let Some(inbox) = self.inbox.as_mut() {
                inbox.unsubscribe(&self.hub, &followed.channel);
            }
        }
        if let Some(joining) = self.joining.take() {
            self.hub.leave_later(&joining.0, joining.1);
        }
        if let (Some(inbox), Some(channel)) = (self.inbox.as_mut(), self.opening.take()) {
            inbox.unsubscribe(&self.hub, &channel);
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use herald_proto::EventName;

    use super::*;
    use crate::config::Config;

    async fn hub() -> Arc<Hub> {
        // Fanned out inline: a message is in the inboxes when its publish returns, so these tests know which
        // messages a subscription that opens after them sees live (none).
        let config = Arc::new(Config { direct_writes: false, ..Config::default() });
        Hub::new(config.clone(), |deliver, metrics| crate::engine::start(config, deliver, metrics)).await.unwrap()
    }

    async fn publish(hub: &Hub, channel: &ChannelName, n: u64) {
        for i in 0..n {
            hub.publish(channel.clone(), EventName::default_event(), Bytes::from(i.to_string())).await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_catch_up_larger_than_a_batch_is_handed_over_in_bounded_batches_in_order_once() {
        let hub = hub().await;
        let a = ChannelName::new("a").unwrap();
        publish(&hub, &a, 100).await;
        let mut subscription = hub.subscription(Transport::WebSocket);
        // Only the first 5 of the history: the next live message reveals a gap of 95.
        let opened = subscription.subscribe(&a, Start::Oldest, 5).await.unwrap();
        assert_eq!(opened.messages.len(), 5);
        publish(&hub, &a, 1).await;
        let mut offsets = Vec::new();
        while offsets.len() < 96 {
            let live = subscription.recv().await;
            let items = subscription.follow(live, 10).await.into_result().unwrap();
            assert!(!items.is_empty() && items.len() <= 10, "a batch of {}", items.len());
            for item in items {
                let Item::Message(message) = item else { panic!("no reset: nothing was lost") };
                offsets.push(message.message.position.offset);
            }
            let handed = subscription.cursor().get(&a).unwrap().offset;
            assert_eq!(handed, *offsets.last().unwrap(), "the cursor is what was handed over, not what was read");
        }
        assert_eq!(offsets, (6..=101).collect::<Vec<_>>());
        assert_eq!(
            hub.metrics().render(0, 0, 0).lines().find(|l| l.contains("by=\"subscriber\"")).unwrap(),
            "herald_catch_up_reads_total{by=\"subscriber\"} 1",
            "one read for the whole gap"
        );
    }

    #[tokio::test]
    async fn a_subscription_that_ends_leaves_the_channel_unwatched() {
        let hub = hub().await;
        let a = ChannelName::new("a").unwrap();
        {
            let mut subscription = hub.subscription(Transport::Sse);
            subscription.subscribe(&a, Start::Now, 0).await.unwrap();
            assert!(hub.subscribers.is_watched(&a));
        }
        assert!(!hub.subscribers.is_watched(&a));
    }
}
