//! Per-subscription bookkeeping that makes delivery exactly-once and in order.
//!
//! A subscriber is registered for live messages *before* its history is read, so the two overlap; and an
//! engine fed by another node may skip messages (a dropped Pub/Sub link). The tracker remembers the last
//! position delivered and judges each live message: deliver it, skip it (already delivered), or catch up
//! through history first (a gap, or a new epoch).

use herald_proto::Position;

/// What to do with a live message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// It is the next one: deliver it.
    Deliver,
    /// It was delivered already.
    Skip,
    /// Messages are missing before it: read history after the tracked position.
    CatchUp,
}

/// The last position delivered on one subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tracker {
    position: Position,
}

impl Tracker {
    /// A subscription that has delivered everything up to `position`.
    pub(crate) fn new(position: Position) -> Self {
        Self { position }
    }

    /// The last position delivered.
    pub(crate) fn position(&self) -> Position {
        self.position
    }

    /// Judges a live message at `at`.
    pub(crate) fn check(&self, at: Position) -> Verdict {
        let before_anything = self.position == Position::default();
        if at.epoch != self.position.epoch && !before_anything {
            return Verdict::CatchUp;
        }
        match at.offset.cmp(&(self.position.offset + 1)) {
            std::cmp::Ordering::Less => Verdict::Skip,
            std::cmp::Ordering::Equal => Verdict::Deliver,
            std::cmp::Ordering::Greater => Verdict::CatchUp,
        }
    }

    /// Records that everything up to `position` was delivered.
    pub(crate) fn advance(&mut self, position: Position) {
        self.position = position;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn judges_each_case() {
        let t = Tracker::new(Position::new(7, 5));
        assert_eq!(t.check(Position::new(7, 6)), Verdict::Deliver);
        assert_eq!(t.check(Position::new(7, 5)), Verdict::Skip);
        assert_eq!(t.check(Position::new(7, 2)), Verdict::Skip);
        assert_eq!(t.check(Position::new(7, 8)), Verdict::CatchUp);
        assert_eq!(t.check(Position::new(8, 6)), Verdict::CatchUp);
        let fresh = Tracker::new(Position::default());
        assert_eq!(fresh.check(Position::new(7, 1)), Verdict::Deliver);
        assert_eq!(fresh.check(Position::new(7, 2)), Verdict::CatchUp);
    }

    proptest! {
        /// A channel holds offsets 1..=n. A subscriber starts after `start`; the live feed overlaps what history
        /// already gave it and drops messages at random. Following the verdicts, reading history on `CatchUp`,
        /// delivers exactly start+1..=n, in order, once each.
        #[test]
        fn resume_never_skips_or_repeats(
            n in 1u64..200,
            start_frac in 0.0f64..1.0,
            overlap in 0u64..20,
            kept in prop::collection::vec(any::<bool>(), 200),
        ) {
            let epoch = 42;
            let start = (n as f64 * start_frac) as u64;
            let mut tracker = Tracker::new(Position::new(epoch, start));
            let mut delivered = Vec::new();
            let live = (start.saturating_sub(overlap).max(1)..=n).filter(|o| kept[*o as usize % kept.len()]);
            for offset in live {
                match tracker.check(Position::new(epoch, offset)) {
                    Verdict::Deliver => delivered.push(offset),
                    Verdict::Skip => continue,
                    // History after the tracked position, up to what is stored now (at least `offset`).
                    Verdict::CatchUp => delivered.extend(tracker.position().offset + 1..=offset),
                }
                tracker.advance(Position::new(epoch, offset));
            }
            // The feed may end with drops: a final catch-up, as a poll or a reconnect would do.
            delivered.extend(tracker.position().offset + 1..=n);
            prop_assert_eq!(delivered, (start + 1..=n).collect::<Vec<_>>());
        }
    }
}
