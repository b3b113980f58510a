//! How subscribers come back after a fault, and when they are live again.
//!
//! A subscriber whose connection ends resumes as `herald.js` does: it waits an exponential backoff with
//! "equal jitter" (half to all of 1 s × 2^attempt, at most 30 s), then subscribes again from its cursor, so a
//! reconnect storm in the bench costs what it costs real pages.
//!
//! A subscriber is *live again* once it has received a message published after the fault ended: from then on
//! it follows the channel in real time. Each subscriber keeps the (sent, received) times of what it got, and
//! the coordinator asks, after the fault, when each one first received a message sent after a given moment.

use serde::Serialize;

/// herald.js's first reconnect delay and its cap, ms.
pub(crate) const RECONNECT_DELAY_MS: u64 = 1_000;
pub(crate) const MAX_RECONNECT_DELAY_MS: u64 = 30_000;

/// The wait before reconnect attempt `attempt` (0 for the first after a connection that worked), with
/// `random` in [0, 1): between half and all of `base × 2^attempt`, capped at `max` (herald.js's `backoffDelay`).
pub(crate) fn backoff_ms(attempt: u32, base: u64, max: u64, random: f64) -> u64 {
    let ceiling = base.saturating_mul(1u64 << attempt.min(30)).min(max) as f64;
    (ceiling / 2.0 + random.clamp(0.0, 1.0) * ceiling / 2.0).round() as u64
}

/// What one subscriber received, as (sent µs, received µs) pairs, duplicates excluded.
#[derive(Debug, Clone, Default)]
pub(crate) struct Arrivals {
    times: Vec<(u64, u64)>,
}

impl Arrivals {
    pub(crate) fn record(&mut self, sent_us: u64, received_us: u64) {
        self.times.push((sent_us, received_us));
    }

    /// When the first message sent at or after `since_us` arrived; `None` if none has yet.
    pub(crate) fn live_at(&self, since_us: u64) -> Option<u64> {
        self.times.iter().filter(|(sent, _)| *sent >= since_us).map(|(_, received)| *received).min()
    }
}

/// When the subscribers were live again after a fault that ended at `back_us`, in ms after it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct LiveAgain {
    pub(crate) subscribers: u64,
    /// Subscribers that received a message sent after `back_us`.
    pub(crate) live: u64,
    pub(crate) p50_ms: Option<f64>,
    pub(crate) p90_ms: Option<f64>,
    pub(crate) p99_ms: Option<f64>,
    /// The last subscriber's time: when *everyone* was live again; `None` while some are not.
    pub(crate) all_ms: Option<f64>,
}

/// Summarises each subscriber's `live_at` (µs since the Unix epoch) against the moment `back_us`.
pub(crate) fn live_again(back_us: u64, live_at: &[Option<u64>]) -> LiveAgain {
    let mut ms: Vec<f64> = live_at.iter().flatten().map(|&at| at.saturating_sub(back_us) as f64 / 1_000.0).collect();
    ms.sort_by(f64::total_cmp);
    // The nearest-rank percentile: the smallest value that at least `q` of all subscribers reached.
    let rank = |q: f64| {
        let n = ((q * live_at.len() as f64).ceil() as usize).max(1);
        ms.get(n - 1).copied()
    };
    LiveAgain {
        subscribers: live_at.len() as u64,
        live: ms.len() as u64,
        p50_ms: rank(0.5),
        p90_ms: rank(0.9),
        p99_ms: rank(0.99),
        all_ms: match ms.len() == live_at.len() {
            true => ms.last().copied(),
            false => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_follows_herald_js_half_to_all_of_a_doubling_ceiling() {
        assert_eq!(backoff_ms(0, 1_000, 30_000, 0.0), 500);
        assert_eq!(backoff_ms(0, 1_000, 30_000, 0.999_999), 1_000);
        assert_eq!(backoff_ms(2, 1_000, 30_000, 0.5), 3_000);
        assert_eq!(backoff_ms(10, 1_000, 30_000, 1.0), 30_000);
        assert_eq!(backoff_ms(200, 1_000, 30_000, 0.0), 15_000);
    }

    #[test]
    fn a_subscriber_is_live_at_the_first_arrival_of_a_message_sent_after_the_fault() {
        let mut arrivals = Arrivals::default();
        arrivals.record(100, 5_000); // sent before, delivered late by a catch-up
        arrivals.record(300, 4_000);
        arrivals.record(400, 4_100);
        assert_eq!(arrivals.live_at(200), Some(4_000));
        assert_eq!(arrivals.live_at(500), None);
    }

    #[test]
    fn everyone_is_live_again_when_the_last_subscriber_is() {
        let back = 1_000_000;
        let summary = live_again(back, &[Some(back + 2_000), Some(back + 500_000), Some(back + 1_000)]);
        assert_eq!((summary.subscribers, summary.live), (3, 3));
        assert_eq!(summary.p50_ms, Some(2.0));
        assert_eq!(summary.all_ms, Some(500.0));
    }

    #[test]
    fn while_someone_is_not_live_there_is_no_time_for_everyone() {
        let back = 1_000_000;
        let summary = live_again(back, &[Some(back + 3_000), None, None, None]);
        assert_eq!(summary.live, 1);
        assert_eq!((summary.p50_ms, summary.all_ms), (None, None));
        assert_eq!(live_again(back, &[]).all_ms, None);
    }
}
