//! Where a stored message (or a change of members) is fanned out: inline, in the engine's delivery callback, or,
//! with `direct_writes`, on the node's fan-out worker, so that the publish does not wait for the writes into its
//! subscribers' sockets.
//!
//! With direct writes the fan-out of a message to a hot channel's 10,000 subscribers is 10,000 `write` calls;
//! done inline, the publish that stored it would answer only after them, and a lone publisher would be capped by
//! them (docs/BENCHMARKS.md). The engine instead hands each message to the worker and the publish answers once it
//! is stored. There is one worker per node, for every channel: messages and changes of members are fanned out in
//! the order the engine and the presence store handed them over, across channels too, as inline. (A worker per
//! channel, by a hash of its name, let a connection subscribed to two channels see a batch's events on `a`, `b`,
//! `a` as `a`, `a`, `b`.) One worker is not one core's worth of fan-out: a worker that is behind queues instead of
//! writing, and the connections' own tasks write on every core. The worker is a task rather than a thread so that
//! the runtime knows it has work (a paused test clock does not jump ahead of a delivery in flight), and the
//! hand-off, which happens in the engine's synchronous callback, never blocks a runtime thread.
//!
//! The worker writes into lent sockets only while it keeps up: a message taken while others wait behind it is
//! queued for every subscriber instead, so that a hot channel's connections catch up on all cores, several
//! messages per write, rather than one `write` per subscriber per message from the one worker (measured: the
//! worker alone held 10,000 subscribers to about 8 messages/s, queues to over 32).
//!
//! A message of a channel with at most [`INLINE_SUBSCRIBERS`] subscribers here is fanned out in the publish itself
//! when the worker is idle (nothing queued, nothing being fanned out): everything handed over before it has then
//! been fanned out, so the order across channels holds, and the publish costs no wake-up of the worker (on two
//! cores, often of the other runtime thread) for a handful of `write`s. While the worker is busy it is queued as
//! any other. A message of a channel nobody subscribes to here is not handed over at all: whoever subscribes from
//! now on reads it from history, where it already is (true of every engine). The disk engine calls back under its
//! writer's lock, so with it a message others subscribe to is always handed over (`inline_max` 0). With Redis the
//! callback runs in the engine's Pub/Sub reader task, which then does those few `write`s itself.
//!
//! Policy: the worker's queue holds [`WORKER_QUEUE`] hand-offs. A publish waits for room in it before it stores
//! its message ([`FanOut::room`], counted in `herald_fanout_waits_total`), so a publisher faster than the fan-out
//! is slowed to its pace and nothing of it is dropped. What no publisher of this node waits for (messages
//! published on other nodes, changes of members) is queued without waiting up to [`WORKER_HARD_CAP`]; past it a
//! message is dropped for this node's fan-out and counted (`herald_fanout_dropped_total`): its subscribers'
//! trackers find the gap at the channel's next message and read it from history, as after a dropped Pub/Sub link.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};

use tokio::sync::Notify;

use super::subscribers::Subscribers;
use crate::encoded::EncodedMessage;
use crate::engine::presence::PresenceEvent;
use crate::metrics::Metrics;

/// Hand-offs queued for the worker before a publish waits for room.
pub(crate) const WORKER_QUEUE: usize = 1024;

/// Hand-offs queued for the worker at most, those of other nodes' messages and of changes of members included.
pub(crate) const WORKER_HARD_CAP: usize = 4 * WORKER_QUEUE;

/// A message of a channel with at most this many subscribers on this node is fanned out in its publish when the
/// worker is idle: a publish waits for that many non-blocking `write`s at most.
pub(crate) const INLINE_SUBSCRIBERS: usize = 8;

/// What a worker fans out.
enum Job {
    Message(Arc<EncodedMessage>),
    Presence(Arc<PresenceEvent>),
}

/// The worker's queue, shared by the hand-offs and the worker's task.
#[derive(Default)]
struct Worker {
    state: Mutex<WorkerState>,
    /// Notified whenever the worker took what was queued (room for waiting publishes).
    room: Notify,
}

#[derive(Default)]
struct WorkerState {
    jobs: VecDeque<Job>,
    /// The worker's task, waiting for a job.
    waker: Option<Waker>,
    /// The fan-out is gone: the task ends.
    closed: bool,
    /// Who is fanning out now: nobody, the worker's task, or a publish (in its delivery callback).
    turn: Turn,
}

/// Who is fanning out. Never two at once: what is handed over is fanned out in order.
#[derive(Default, Clone, Copy, PartialEq, Eq, Debug)]
enum Turn {
    #[default]
    Idle,
    Worker,
    Inline,
}

impl Worker {
    fn lock(&self) -> MutexGuard<'_, WorkerState> {
        // Nothing panics while holding the lock; a poisoned queue is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn backlog(&self) -> usize {
        self.lock().jobs.len()
    }

    /// Takes the turn for a fan-out in the caller's thread, if nothing is queued or being fanned out. The turn is
    /// given back when the guard is dropped, a panic's unwinding included: a turn kept would stop the worker for good.
    fn enter(&self) -> Option<InlineTurn<'_>> {
        let mut state = self.lock();
        if state.turn != Turn::Idle || !state.jobs.is_empty() || state.closed {
            return None;
        }
        state.turn = Turn::Inline;
        Some(InlineTurn(self))
    }
}

/// A publish's turn to fan out ([`Worker::enter`]); dropping it wakes the worker for what was queued meanwhile.
struct InlineTurn<'a>(&'a Worker);

impl Drop for InlineTurn<'_> {
    fn drop(&mut self) {
        let waker = {
            let mut state = self.0.lock();
            state.turn = Turn::Idle;
            if state.jobs.is_empty() {
                None
            } else {
                state.waker.take()
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The fan-out of one node: its two subscriber registries, fed inline or through the worker.
pub(crate) struct FanOut {
    /// Subscribers of channels' messages.
    subscribers: Arc<Subscribers>,
    /// Subscribers of channels' presence.
    followers: Arc<Subscribers>,
    /// None: fan out inline.
    worker: Option<Arc<Worker>>,
    /// With a worker: channels with at most this many subscribers are fanned out in the publish when it is idle.
    inline_max: usize,
    metrics: Arc<Metrics>,
}

impl FanOut {
    /// Fans out inline, in the caller's thread.
    pub(crate) fn inline(subscribers: Arc<Subscribers>, followers: Arc<Subscribers>, metrics: Arc<Metrics>) -> Self {
        Self { subscribers, followers, worker: None, inline_max: 0, metrics }
    }

    /// Fans out on a worker task of the current runtime, which ends once this is dropped, or in the publish for
    /// channels of at most `inline_max` subscribers while the worker is idle.
    pub(crate) fn on_worker(
        subscribers: Arc<Subscribers>,
        followers: Arc<Subscribers>,
        metrics: Arc<Metrics>,
        inline_max: usize,
    ) -> Self {
        let worker = Arc::new(Worker::default());
        tokio::spawn(work(worker.clone(), subscribers.clone(), followers.clone()));
        Self { subscribers, followers, worker: Some(worker), inline_max, metrics }
    }

    /// Waits until the worker has room for one more message (at once when fanning out inline).
    pub(crate) async fn room(&self) {
        let Some(worker) = &self.worker else { return };
        if worker.backlog() < WORKER_QUEUE {
            return;
        }
        self.metrics.fanout_waited();
        loop {
            let notified = worker.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if worker.backlog() < WORKER_QUEUE {
                return;
            }
            notified.await;
        }
    }

    /// Fans out a stored message to the subscribers of its channel.
    pub(crate) fn message(&self, message: &Arc<EncodedMessage>) {
        let Some(worker) = &self.worker else { return self.subscribers.deliver(message, true) };
        // Taken after the message was stored: whoever subscribes after this look reads it from history.
        let listeners = self.subscribers.listeners(&message.message.channel);
        match listeners {
            None => self.subscribers.deliver_to(None, message, true),
            Some(list) if list.len() <= self.inline_max => match worker.enter() {
                Some(_turn) => self.subscribers.deliver_to(Some(&list), message, true),
                None => self.hand(worker, Job::Message(message.clone())),
            },
            Some(_) => self.hand(worker, Job::Message(message.clone())),
        }
    }

    /// Fans out a change of members to the followers of its channel's presence, in order with its messages.
    pub(crate) fn presence(&self, event: &Arc<PresenceEvent>) {
        match &self.worker {
            Some(worker) => self.hand(worker, Job::Presence(event.clone())),
            None => self.followers.deliver_presence(event),
        }
    }

    /// Queues `job` for `worker` without waiting (the written policy above), and wakes it.
    fn hand(&self, worker: &Worker, job: Job) {
        let waker = {
            let mut state = worker.lock();
            if state.jobs.len() >= WORKER_HARD_CAP {
                drop(state);
                self.metrics.fanout_dropped();
                return;
            }
            state.jobs.push_back(job);
            // A publish fanning out in its thread wakes the worker when it is done.
            if state.turn == Turn::Inline {
                None
            } else {
                state.waker.take()
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl Drop for FanOut {
    fn drop(&mut self) {
        if let Some(worker) = &self.worker {
            let waker = {
                let mut state = worker.lock();
                state.closed = true;
                state.jobs.clear();
                state.waker.take()
            };
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }
}

/// Jobs the worker does before it yields to the runtime's other tasks.
const WORKER_BATCH: usize = 64;

/// The worker's loop: fans out what it is handed, in order, until the fan-out is dropped. It yields to the
/// runtime after [`WORKER_BATCH`] jobs in a row, so a busy channel does not keep a runtime thread to itself.
async fn work(worker: Arc<Worker>, subscribers: Arc<Subscribers>, followers: Arc<Subscribers>) {
    let mut done = 0;
    loop {
        let job = poll_fn(|cx| {
            let mut state = worker.lock();
            if state.closed {
                return Poll::Ready(None);
            }
            let job = if state.turn == Turn::Inline { None } else { state.jobs.pop_front() };
            match job {
                Some(job) => {
                    state.turn = Turn::Worker;
                    Poll::Ready(Some((job, state.jobs.is_empty())))
                }
                None => {
                    if state.turn == Turn::Worker {
                        state.turn = Turn::Idle;
                    }
                    match &state.waker {
                        Some(waker) if waker.will_wake(cx.waker()) => {}
                        _ => state.waker = Some(cx.waker().clone()),
                    }
                    Poll::Pending
                }
            }
        })
        .await;
        let Some((job, caught_up)) = job else { return };
        match job {
            // Behind (more is waiting): queued for the connections' tasks, which write on every core and take
            // up to 64 messages per write, instead of one `write` per subscriber per message from this task. Not
            // for a channel of a few subscribers: for them a `write` here costs less than waking their tasks.
            Job::Message(message) => {
                let list = subscribers.listeners(&message.message.channel);
                let write = caught_up || list.as_ref().is_some_and(|list| list.len() <= INLINE_SUBSCRIBERS);
                subscribers.deliver_to(list.as_deref().map(Vec::as_slice), &message, write);
            }
            Job::Presence(event) => followers.deliver_presence(&event),
        }
        worker.room.notify_waiters();
        done += 1;
        if done % WORKER_BATCH == 0 {
            tokio::task::yield_now().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use herald_proto::{ChannelName, EventName};

    use super::super::{Hub, Item};
    use super::*;
    use crate::config::Config;
    use crate::engine::Start;
    use crate::metrics::Transport;

    async fn hub() -> Arc<Hub> {
        let config = Arc::new(Config { direct_writes: true, connection_queue: 4096, ..Config::default() });
        Hub::new(config.clone(), |deliver, metrics| crate::engine::start(config, deliver, metrics)).await.unwrap()
    }

    fn metric(hub: &Hub, name: &str) -> u64 {
        let text = hub.metrics().render(0, 0, 0);
        let line = text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap();
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }

    /// Offsets of the next `n` messages of the subscription.
    async fn offsets(subscription: &mut crate::hub::Subscription, n: usize) -> Vec<u64> {
        let mut offsets = Vec::new();
        while offsets.len() < n {
            let live = subscription.recv().await;
            for item in subscription.follow(live, 64).await.into_result().unwrap() {
                let Item::Message(message) = item else { panic!("only messages") };
                offsets.push(message.message.position.offset);
            }
        }
        offsets
    }

    /// Subscriptions to `channel` that it takes to make it fanned out by the worker: one more than is inline.
    async fn crowd(hub: &Arc<Hub>, channel: &ChannelName) -> Vec<crate::hub::Subscription> {
        let mut crowd = Vec::new();
        for _ in 0..=INLINE_SUBSCRIBERS {
            let mut subscription = hub.subscription(Transport::WebSocket);
            subscription.subscribe(channel, Start::Now, 0).await.unwrap();
            crowd.push(subscription);
        }
        crowd
    }

    #[tokio::test]
    async fn a_publish_to_a_crowded_channel_answers_before_its_message_is_fanned_out() {
        use futures_util::FutureExt;
        let hub = hub().await;
        let a = ChannelName::new("a").unwrap();
        let mut crowd = crowd(&hub, &a).await;
        hub.publish(a.clone(), EventName::default_event(), Bytes::from_static(b"1")).await.unwrap();
        // Nothing yielded to the worker since (one thread): the publish answered without waiting for it.
        assert!(crowd[0].recv().now_or_never().is_none(), "not fanned out yet");
        for subscription in &mut crowd {
            assert_eq!(offsets(subscription, 1).await, [1]);
        }
    }

    #[tokio::test]
    async fn a_publish_to_a_channel_of_few_subscribers_fans_out_itself_while_the_worker_is_idle() {
        use futures_util::FutureExt;
        let hub = hub().await;
        let a = ChannelName::new("a").unwrap();
        let mut subscription = hub.subscription(Transport::WebSocket);
        subscription.subscribe(&a, Start::Now, 0).await.unwrap();
        hub.publish(a.clone(), EventName::default_event(), Bytes::from_static(b"1")).await.unwrap();
        // Nothing yielded to the worker since (one thread): the publish itself handed it over.
        let live = subscription.recv().now_or_never().expect("fanned out in the publish");
        let batch = subscription.follow(live, 64).await.into_result().unwrap();
        assert!(matches!(&batch[..], [Item::Message(m)] if m.message.position.offset == 1));
    }

    #[tokio::test]
    async fn a_message_of_a_small_channel_waits_behind_what_the_worker_has_queued() {
        use futures_util::FutureExt;
        let hub = hub().await;
        let (crowded, small) = (ChannelName::new("crowded").unwrap(), ChannelName::new("small").unwrap());
        let _crowd = crowd(&hub, &crowded).await;
        let mut both = hub.subscription(Transport::WebSocket);
        both.subscribe(&crowded, Start::Now, 0).await.unwrap();
        both.subscribe(&small, Start::Now, 0).await.unwrap();
        hub.publish(crowded.clone(), EventName::default_event(), Bytes::from_static(b"1")).await.unwrap();
        hub.publish(small.clone(), EventName::default_event(), Bytes::from_static(b"2")).await.unwrap();
        assert!(both.recv().now_or_never().is_none(), "the small channel's message did not overtake the queue");
        let mut received = Vec::new();
        while received.len() < 2 {
            let live = both.recv().await;
            for item in both.follow(live, 64).await.into_result().unwrap() {
                let Item::Message(message) = item else { panic!("only messages") };
                received.push(message.message.channel.clone());
            }
        }
        assert_eq!(received, [crowded, small], "in the order they were stored");
    }

    #[tokio::test]
    async fn a_message_nobody_subscribes_to_here_is_not_handed_to_the_worker() {
        let hub = hub().await;
        let a = ChannelName::new("a").unwrap();
        // Without the worker ever running in between, more than its queue holds: no publish waits for room.
        for i in 0..2 * WORKER_QUEUE {
            hub.publish(a.clone(), EventName::default_event(), Bytes::from(i.to_string())).await.unwrap();
        }
        assert_eq!(metric(&hub, "herald_fanout_waits_total"), 0);
        // They are stored: whoever subscribes now reads them from history.
        let mut subscription = hub.subscription(Transport::WebSocket);
        let opened = subscription.subscribe(&a, Start::Newest(1), 10).await.unwrap();
        let replayed: Vec<u64> = opened.messages.iter().map(|m| m.message.position.offset).collect();
        assert_eq!(replayed, [2 * WORKER_QUEUE as u64]);
    }

    #[tokio::test]
    async fn a_publisher_faster_than_the_fan_out_waits_for_room_and_nothing_is_lost_or_reordered() {
        let hub = hub().await;
        let a = ChannelName::new("a").unwrap();
        let mut crowd = crowd(&hub, &a).await;
        let n = 3 * WORKER_QUEUE;
        for i in 0..n {
            hub.publish(a.clone(), EventName::default_event(), Bytes::from(i.to_string())).await.unwrap();
        }
        assert!(metric(&hub, "herald_fanout_waits_total") > 0, "the publisher outran the worker and waited");
        assert_eq!(metric(&hub, "herald_fanout_dropped_total"), 0);
        assert_eq!(offsets(&mut crowd[0], n).await, (1..=n as u64).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn messages_of_several_channels_reach_a_subscriber_of_them_all_in_the_order_they_were_stored() {
        let hub = hub().await;
        let channels: Vec<_> = (0..8).map(|i| ChannelName::new(&format!("c{i}")).unwrap()).collect();
        // Half of them crowded (fanned out by the worker), half not (fanned out in the publish when it is idle).
        let mut crowds = Vec::new();
        for channel in channels.iter().step_by(2) {
            crowds.push(crowd(&hub, channel).await);
        }
        let mut subscription = hub.subscription(Transport::WebSocket);
        for channel in &channels {
            subscription.subscribe(channel, Start::Now, 0).await.unwrap();
        }
        let mut published = Vec::new();
        for round in 0..4 {
            for channel in &channels {
                hub.publish(channel.clone(), EventName::default_event(), Bytes::from(round.to_string())).await.unwrap();
                published.push(channel.clone());
            }
        }
        let mut received = Vec::new();
        while received.len() < published.len() {
            let live = subscription.recv().await;
            for item in subscription.follow(live, 64).await.into_result().unwrap() {
                let Item::Message(message) = item else { panic!("only messages") };
                received.push(message.message.channel.clone());
            }
        }
        assert_eq!(received, published);
    }
}
