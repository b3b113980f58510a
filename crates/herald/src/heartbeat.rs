//! One clock for every connection's heartbeat: WebSocket pings, SSE `: ping` comments, the Pusher activity check.
//!
//! A timer per connection costs little memory but a wake-up of the runtime per connection: 15,000 WebSockets
//! pinging every 20 s at staggered times woke a worker 750 times a second, one connection each, and that was
//! most of Herald's CPU at rest (docs/BENCHMARKS.md, *Idle CPU*). Here one task ticks every [`TICK`] and wakes,
//! in one go, the connections whose time came during that tick: a timing wheel of coarse slots, one
//! [`Notify`] per slot, which a connection waits on without an allocation or a registration of its own.
//!
//! A wait completes at the first tick at or after its instant: never early, at most one tick late. Periods are
//! whole seconds, multiples of the tick, so a connection's heartbeats stay exactly a period apart.

use std::future::Future;
use std::sync::{Arc, Once, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::shutdown::Shutdown;

/// How far apart the ticks are: how late a heartbeat may be, and how many times a second the clock wakes.
pub const TICK: Duration = Duration::from_millis(100);

/// The shared clock. One per server, in its state; its task starts with the first wait and ends at shutdown.
pub struct Heartbeats {
    wheel: Arc<Wheel>,
    shutdown: Shutdown,
    started: Once,
}

struct Wheel {
    /// Tick `n` is at `origin + n × TICK`.
    origin: Instant,
    /// The last tick told: every wait for it or an earlier one is over.
    passed: std::sync::atomic::AtomicU64,
    /// A wait for tick `n` waits on slot `n % slots.len()`; a slot is told at each of its ticks, so a wait more
    /// than a round ahead is woken early and waits again.
    slots: Box<[Notify]>,
}

impl Heartbeats {
    /// A clock whose slots cover `horizon` (the longest wait expected), so no wait is woken before its time.
    pub fn new(horizon: Duration, shutdown: Shutdown) -> Self {
        let slots = (horizon.as_millis() / TICK.as_millis() + 2).clamp(16, 1 << 16);
        let wheel = Wheel {
            origin: Instant::now(),
            passed: std::sync::atomic::AtomicU64::new(0),
            slots: (0..slots).map(|_| Notify::new()).collect(),
        };
        Self { wheel: Arc::new(wheel), shutdown, started: Once::new() }
    }

    /// Completes at the first tick at or after `at`.
    ///
    /// Not an `async fn`: its future would keep `at` and `self` beside the tick and slot made of them (and an
    /// async fn's arguments twice), and every waiting connection keeps this future.
    pub fn at(&self, at: Instant) -> impl Future<Output = ()> + Send + '_ {
        self.started.call_once(|| {
            let ticking = tick(Arc::downgrade(&self.wheel), self.wheel.origin, self.shutdown.clone());
            self.shutdown.tracker().spawn(ticking);
        });
        let wheel = &*self.wheel;
        let due = wheel.tick_of(at);
        let slot = &wheel.slots[(due % wheel.slots.len() as u64) as usize];
        async move {
            loop {
                if wheel.passed() >= due {
                    return;
                }
                // Registered before the second look: a tick told after it wakes this wait, one told before it is
                // seen.
                let notified = slot.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if wheel.passed() >= due {
                    return;
                }
                notified.await;
            }
        }
    }
}

impl Wheel {
    fn passed(&self) -> u64 {
        self.passed.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The first tick at or after `at`.
    fn tick_of(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.origin).as_nanos();
        let tick = TICK.as_nanos();
        u64::try_from(since.div_ceil(tick)).unwrap_or(u64::MAX)
    }
}

/// The clock's task: at each tick, tells the slots of every tick passed since the last (several when the
/// runtime was late or a test's paused clock jumped; each slot at most once).
async fn tick(wheel: Weak<Wheel>, origin: Instant, shutdown: Shutdown) {
    let mut passed = 0u64;
    loop {
        let next = origin + TICK * u32::try_from(passed + 1).unwrap_or(u32::MAX);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep_until(next) => {}
        }
        let Some(wheel) = wheel.upgrade() else { return };
        let now = (Instant::now().saturating_duration_since(origin).as_nanos() / TICK.as_nanos()) as u64;
        let first = passed + 1;
        passed = now.max(first);
        wheel.passed.store(passed, std::sync::atomic::Ordering::Release);
        let slots = wheel.slots.len() as u64;
        for due in first.max(passed.saturating_sub(slots - 1))..=passed {
            wheel.slots[(due % slots) as usize].notify_waiters();
        }
    }
}

/// A connection's periodic heartbeat on the shared clock: due every `period` from its start.
#[derive(Debug, Clone, Copy)]
pub struct Beat {
    next: Instant,
    period: Duration,
}

impl Beat {
    /// The first beat one `period` from now.
    pub fn every(period: Duration) -> Self {
        Self { next: Instant::now() + period, period }
    }

    /// When the next beat is due.
    pub fn due(&self) -> Instant {
        self.next
    }

    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// The beat was handled: the next one is a period later (or a period from now, if the connection was busy
    /// past it: beats missed are not made up).
    pub fn advance(&mut self) {
        self.next += self.period;
        let now = Instant::now();
        if self.next <= now {
            self.next = now + self.period;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_wait_ends_at_the_first_tick_at_or_after_its_instant() {
        let clock = Heartbeats::new(Duration::from_secs(20), Shutdown::new());
        let start = Instant::now();
        clock.at(start + Duration::from_millis(1_050)).await;
        assert_eq!(start.elapsed(), Duration::from_millis(1_100));
        clock.at(start + Duration::from_secs(2)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_longer_than_the_wheels_round_ends_at_its_time() {
        let clock = Heartbeats::new(Duration::from_secs(1), Shutdown::new());
        let start = Instant::now();
        clock.at(start + Duration::from_secs(120)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(120));
    }

    #[tokio::test(start_paused = true)]
    async fn waits_whose_tick_was_skipped_by_a_jump_of_the_clock_end() {
        let clock = Arc::new(Heartbeats::new(Duration::from_secs(20), Shutdown::new()));
        let start = Instant::now();
        let waiting = tokio::spawn({
            let clock = clock.clone();
            async move { clock.at(start + Duration::from_secs(5)).await }
        });
        tokio::task::yield_now().await;
        tokio::time::advance(Duration::from_secs(61)).await;
        tokio::time::timeout(Duration::from_millis(200), waiting).await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_beat_is_a_period_apart_and_does_not_make_up_missed_ones() {
        let mut beat = Beat::every(Duration::from_secs(20));
        let first = beat.due();
        beat.advance();
        assert_eq!(beat.due(), first + Duration::from_secs(20));
        tokio::time::advance(Duration::from_secs(100)).await;
        beat.advance();
        assert_eq!(beat.due(), Instant::now() + Duration::from_secs(20));
    }
}
