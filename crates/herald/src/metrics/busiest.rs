//! The busiest channels by message rate, in bounded memory, for the admin page.
//!
//! A space-saving sketch (Metwally, Agrawal and El Abbadi, 2005) counts messages per channel in at most
//! [`TRACKED`] slots: a channel not yet tracked takes the slot of the least counted one and inherits its count,
//! so any channel busier than 1/[`TRACKED`] of the traffic is always among the slots, and a count is never
//! under its true value by construction (over by at most the inherited count, kept as `error`). Two windows of
//! [`WINDOW`] make the rate a sliding estimate: the current window's count plus the previous window's, weighted
//! by how much of it still lies within the last [`WINDOW`]. Memory: at most 2 × [`TRACKED`] channel names, however
//! many channels there are.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use herald_proto::ChannelName;

/// Channels tracked per window.
pub const TRACKED: usize = 32;

/// How long a window lasts: the rates are over about this much time.
pub const WINDOW: Duration = Duration::from_secs(10);

/// One channel's count in a window.
#[derive(Debug, Clone)]
struct Slot {
    channel: ChannelName,
    count: u64,
}

/// A space-saving sketch of one window.
#[derive(Debug, Default)]
struct Sketch {
    slots: Vec<Slot>,
}

impl Sketch {
    fn record(&mut self, channel: &ChannelName) {
        if let Some(slot) = self.slots.iter_mut().find(|s| s.channel == *channel) {
            slot.count += 1;
        } else if self.slots.len() < TRACKED {
            self.slots.push(Slot { channel: channel.clone(), count: 1 });
        } else if let Some(least) = self.slots.iter_mut().min_by_key(|s| s.count) {
            *least = Slot { channel: channel.clone(), count: least.count + 1 };
        }
    }

    fn count(&self, channel: &ChannelName) -> u64 {
        self.slots.iter().find(|s| s.channel == *channel).map_or(0, |s| s.count)
    }
}

#[derive(Debug)]
struct Windows {
    started: Instant,
    current: Sketch,
    previous: Sketch,
}

impl Windows {
    /// Moves to the window `now` falls in.
    fn roll(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.started);
        if elapsed < WINDOW {
            return;
        }
        let current = std::mem::take(&mut self.current);
        // A window with nothing after it (no message for a whole window) leaves nothing to weigh.
        self.previous = if elapsed < 2 * WINDOW { current } else { Sketch::default() };
        self.started = now - Duration::from_nanos((elapsed.as_nanos() % WINDOW.as_nanos()) as u64);
    }
}

/// The busiest channels of a node.
#[derive(Debug)]
pub struct Busiest {
    windows: Mutex<Windows>,
}

impl Default for Busiest {
    fn default() -> Self {
        let windows = Windows { started: Instant::now(), current: Sketch::default(), previous: Sketch::default() };
        Self { windows: Mutex::new(windows) }
    }
}

impl Busiest {
    fn lock(&self) -> MutexGuard<'_, Windows> {
        // Every update is a whole slot: a panic elsewhere cannot leave one half-written.
        self.windows.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a message of `channel`.
    pub fn record(&self, channel: &ChannelName) {
        self.lock().current.record(channel);
    }

    /// Moves to the window `now` falls in (the sweeper calls this every second, so an idle node's rates fall).
    pub fn roll(&self, now: Instant) {
        self.lock().roll(now);
    }

    /// At most `n` channels, busiest first, each with its estimated messages a second over the last [`WINDOW`].
    pub fn top(&self, n: usize, now: Instant) -> Vec<(ChannelName, f64)> {
        let mut windows = self.lock();
        windows.roll(now);
        let into_current = now.saturating_duration_since(windows.started).as_secs_f64() / WINDOW.as_secs_f64();
        let weight = 1.0 - into_current.min(1.0);
        let mut rates: Vec<(ChannelName, f64)> = Vec::new();
        for slot in windows.current.slots.iter().chain(&windows.previous.slots) {
            if rates.iter().any(|(c, _)| *c == slot.channel) {
                continue;
            }
            let estimate =
                windows.current.count(&slot.channel) as f64 + windows.previous.count(&slot.channel) as f64 * weight;
            rates.push((slot.channel.clone(), estimate / WINDOW.as_secs_f64()));
        }
        rates.retain(|(_, rate)| *rate > 0.0);
        rates.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        rates.truncate(n);
        rates
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(name: &str) -> ChannelName {
        ChannelName::new(name).unwrap()
    }

    #[test]
    fn the_busiest_channels_come_first_with_their_rate() {
        let busiest = Busiest::default();
        let start = busiest.lock().started;
        for (name, n) in [("a", 50), ("b", 200), ("c", 10)] {
            for _ in 0..n {
                busiest.record(&ch(name));
            }
        }
        let top = busiest.top(2, start + Duration::from_secs(1));
        assert_eq!(top, [(ch("b"), 20.0), (ch("a"), 5.0)]);
    }

    #[test]
    fn heavy_hitters_are_found_among_many_more_channels_than_slots_in_bounded_memory() {
        let busiest = Busiest::default();
        let start = busiest.lock().started;
        for round in 0..1000 {
            busiest.record(&ch("hot"));
            busiest.record(&ch("warm"));
            if round % 2 == 0 {
                busiest.record(&ch("warm"));
            }
            // 10,000 channels of one message each.
            for i in 0..10 {
                busiest.record(&ch(&format!("cold-{round}-{i}")));
            }
        }
        assert!(busiest.lock().current.slots.len() <= TRACKED);
        let top = busiest.top(2, start);
        let names: Vec<&str> = top.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(names, ["warm", "hot"]);
        assert!(top[1].1 >= 1000.0 / WINDOW.as_secs_f64(), "never under the true count: {top:?}");
    }

    #[test]
    fn rates_slide_out_over_two_windows() {
        let busiest = Busiest::default();
        let start = busiest.lock().started;
        for _ in 0..100 {
            busiest.record(&ch("a"));
        }
        let rate = |at: Duration| busiest.top(1, start + at).first().map_or(0.0, |(_, r)| *r);
        assert_eq!(rate(Duration::from_secs(5)), 10.0);
        assert_eq!(rate(WINDOW + WINDOW / 2), 5.0, "half of the previous window still counts");
        assert_eq!(rate(WINDOW * 2), 0.0);
        busiest.roll(start + WINDOW * 5);
        assert!(busiest.top(1, start + WINDOW * 5).is_empty());
    }
}
