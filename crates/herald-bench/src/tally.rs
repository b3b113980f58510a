//! Counting what subscribers received: latency per load step in an HdrHistogram, and, per subscriber, the
//! last sequence number seen from each publisher, which turns every gap and every repeat into a count.
//!
//! A worker keeps one [`Tally`] for all its subscribers and sends it to the coordinator as a [`TallyReport`],
//! which merges the reports of every worker.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::payload::Stamp;

/// Latencies are recorded in µs, from 1 µs to 10 minutes, with 3 significant digits.
const MAX_LATENCY_US: u64 = 600_000_000;

/// A new latency histogram.
pub(crate) fn histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).unwrap_or_else(|_| unreachable!("valid histogram bounds"))
}

/// One subscriber's position in each publisher's sequence on its channel.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sequence {
    last: Vec<u64>,
}

/// What one received message means for its subscriber's sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// The next one.
    Next,
    /// This many messages were skipped before it.
    Gap(u64),
    /// Already received (or out of order).
    Duplicate,
}

impl Sequence {
    /// A subscriber that starts after publisher `p` had acknowledged `published[p]` messages on its channel:
    /// those are not expected, and one of them arriving counts as a duplicate.
    pub(crate) fn starting_after(published: &[u64]) -> Self {
        Self { last: published.to_vec() }
    }

    /// Records message `seq` of `publisher`.
    pub(crate) fn see(&mut self, publisher: u32, seq: u64) -> Seen {
        let p = publisher as usize;
        if self.last.len() <= p {
            self.last.resize(p + 1, 0);
        }
        let last = self.last[p];
        if seq <= last {
            return Seen::Duplicate;
        }
        self.last[p] = seq;
        match seq - last - 1 {
            0 => Seen::Next,
            skipped => Seen::Gap(skipped),
        }
    }

    /// Messages published (`published[p]` = the last sequence number publisher `p` had acknowledged on this
    /// channel) that never arrived after the last one seen.
    pub(crate) fn missing(&self, published: &[u64]) -> u64 {
        published.iter().enumerate().map(|(p, &n)| n.saturating_sub(self.last.get(p).copied().unwrap_or(0))).sum()
    }
}

/// One load step, as seen by subscribers.
pub(crate) struct StepTally {
    pub(crate) delivered: u64,
    pub(crate) latency_us: Histogram<u64>,
    /// When the last message of the step arrived (µs since the Unix epoch).
    pub(crate) last_at_us: u64,
}

/// Everything a worker's subscribers received.
#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) steps: Vec<StepTally>,
    pub(crate) gaps: u64,
    pub(crate) duplicates: u64,
    pub(crate) errors: u64,
    pub(crate) error_samples: Vec<String>,
    /// Subscriptions that ended (an error or the server closing).
    pub(crate) ended: u64,
    /// Subscriptions opened again from their cursor after they ended (only when the load resumes them).
    pub(crate) reconnects: u64,
    /// Why subscriptions ended, with how many times each.
    pub(crate) drops: BTreeMap<String, u64>,
}

/// Error messages kept as examples, per worker.
const ERROR_SAMPLES: usize = 5;

/// Distinct reasons kept in [`Tally::drops`]; further ones are counted under [`OTHER_DROPS`].
const DROP_REASONS: usize = 10;
const OTHER_DROPS: &str = "(other reasons)";

/// Counts `n` drops for `reason` in `drops`, which keeps at most [`DROP_REASONS`] reasons and an "other" entry.
fn count_drop(drops: &mut BTreeMap<String, u64>, reason: &str, n: u64) {
    let key = match drops.contains_key(reason) || drops.len() < DROP_REASONS {
        true => reason,
        false => OTHER_DROPS,
    };
    *drops.entry(key.to_string()).or_default() += n;
}

impl Tally {
    /// Records a received message, stamped `stamp`, that arrived at `now_us`.
    pub(crate) fn receive(&mut self, sequence: &mut Sequence, stamp: Stamp, now_us: u64) {
        match sequence.see(stamp.publisher, stamp.seq) {
            Seen::Next => {}
            Seen::Gap(skipped) => self.gaps += skipped,
            Seen::Duplicate => {
                self.duplicates += 1;
                return;
            }
        }
        let step = stamp.step as usize;
        while self.steps.len() <= step {
            self.steps.push(StepTally { delivered: 0, latency_us: histogram(), last_at_us: 0 });
        }
        let tally = &mut self.steps[step];
        tally.delivered += 1;
        tally.last_at_us = tally.last_at_us.max(now_us);
        tally.latency_us.saturating_record(now_us.saturating_sub(stamp.sent_us).max(1));
    }

    /// Records an error, keeping the first few messages as examples.
    pub(crate) fn error(&mut self, message: String) {
        self.errors += 1;
        if self.error_samples.len() < ERROR_SAMPLES {
            self.error_samples.push(message);
        }
    }

    /// Records a subscription that ended for `reason`.
    pub(crate) fn dropped(&mut self, reason: &str) {
        self.ended += 1;
        count_drop(&mut self.drops, reason, 1);
    }

    pub(crate) fn report(&self) -> TallyReport {
        TallyReport {
            steps: self
                .steps
                .iter()
                .map(|s| StepReport {
                    delivered: s.delivered,
                    last_at_us: s.last_at_us,
                    latency_us: s
                        .latency_us
                        .iter_recorded()
                        .map(|v| (v.value_iterated_to(), v.count_at_value()))
                        .collect(),
                })
                .collect(),
            gaps: self.gaps,
            duplicates: self.duplicates,
            errors: self.errors,
            error_samples: self.error_samples.clone(),
            ended: self.ended,
            reconnects: self.reconnects,
            drops: self.drops.clone(),
        }
    }
}

/// One step of a [`TallyReport`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct StepReport {
    pub(crate) delivered: u64,
    pub(crate) last_at_us: u64,
    /// The latency histogram as (µs, count) pairs.
    pub(crate) latency_us: Vec<(u64, u64)>,
}

/// A [`Tally`] on the wire between a worker and the coordinator.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct TallyReport {
    pub(crate) steps: Vec<StepReport>,
    pub(crate) gaps: u64,
    pub(crate) duplicates: u64,
    pub(crate) errors: u64,
    pub(crate) error_samples: Vec<String>,
    pub(crate) ended: u64,
    pub(crate) reconnects: u64,
    pub(crate) drops: BTreeMap<String, u64>,
}

impl TallyReport {
    /// Adds `other` (another worker's report) to this one.
    pub(crate) fn merge(&mut self, other: &TallyReport) {
        if self.steps.len() < other.steps.len() {
            self.steps.resize(other.steps.len(), StepReport::default());
        }
        for (mine, theirs) in self.steps.iter_mut().zip(&other.steps) {
            mine.delivered += theirs.delivered;
            mine.last_at_us = mine.last_at_us.max(theirs.last_at_us);
            mine.latency_us.extend_from_slice(&theirs.latency_us);
        }
        self.gaps += other.gaps;
        self.duplicates += other.duplicates;
        self.errors += other.errors;
        self.ended += other.ended;
        self.reconnects += other.reconnects;
        for (reason, &n) in &other.drops {
            count_drop(&mut self.drops, reason, n);
        }
        for sample in &other.error_samples {
            if self.error_samples.len() < ERROR_SAMPLES * 2 {
                self.error_samples.push(sample.clone());
            }
        }
    }

    /// Step `step`'s latency histogram.
    pub(crate) fn latency(&self, step: usize) -> Histogram<u64> {
        let mut h = histogram();
        for &(value, count) in self.steps.get(step).map(|s| s.latency_us.as_slice()).unwrap_or_default() {
            h.saturating_record_n(value, count);
        }
        h
    }

    /// Messages step `step` delivered.
    pub(crate) fn delivered(&self, step: usize) -> u64 {
        self.steps.get(step).map_or(0, |s| s.delivered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(publisher: u32, seq: u64) -> Stamp {
        Stamp { step: 0, publisher, seq, sent_us: 1_000 }
    }

    #[test]
    fn each_publisher_has_its_own_sequence() {
        let mut sequence = Sequence::default();
        assert_eq!(sequence.see(0, 1), Seen::Next);
        assert_eq!(sequence.see(1, 1), Seen::Next);
        assert_eq!(sequence.see(0, 2), Seen::Next);
        assert_eq!(sequence.see(1, 4), Seen::Gap(2));
        assert_eq!(sequence.see(1, 4), Seen::Duplicate);
        assert_eq!(sequence.see(0, 1), Seen::Duplicate);
    }

    #[test]
    fn a_subscriber_starting_after_earlier_messages_expects_only_later_ones() {
        let mut sequence = Sequence::starting_after(&[1_500, 1_500]);
        assert_eq!(sequence.see(0, 1_501), Seen::Next);
        assert_eq!(sequence.see(1, 1_200), Seen::Duplicate);
        assert_eq!(sequence.missing(&[1_502, 1_500]), 1);
    }

    #[test]
    fn drop_reasons_are_counted_and_bounded_in_number() {
        let mut tally = Tally::default();
        tally.dropped("slow consumer");
        tally.dropped("slow consumer");
        for i in 0..DROP_REASONS + 2 {
            tally.dropped(&format!("reason {i}"));
        }
        let mut merged = tally.report();
        merged.merge(&tally.report());
        assert_eq!(merged.drops["slow consumer"], 4);
        assert_eq!(merged.drops[OTHER_DROPS], 2 * 3);
        assert_eq!(merged.drops.len(), DROP_REASONS + 1);
        assert_eq!(merged.ended, 2 * (DROP_REASONS as u64 + 4));
    }

    #[test]
    fn what_never_arrived_after_the_last_seen_is_missing() {
        let mut sequence = Sequence::default();
        sequence.see(0, 1);
        sequence.see(0, 2);
        assert_eq!(sequence.missing(&[5, 3]), 3 + 3);
        assert_eq!(sequence.missing(&[2]), 0);
    }

    #[test]
    fn a_tally_counts_gaps_and_duplicates_and_records_latency_of_new_messages_only() {
        let mut tally = Tally::default();
        let mut sequence = Sequence::default();
        tally.receive(&mut sequence, stamp(0, 1), 3_000);
        tally.receive(&mut sequence, stamp(0, 3), 5_000);
        tally.receive(&mut sequence, stamp(0, 3), 9_000);
        let report = tally.report();
        assert_eq!((report.gaps, report.duplicates, report.delivered(0)), (1, 1, 2));
        let latency = report.latency(0);
        assert_eq!((latency.len(), latency.max()), (2, latency.highest_equivalent(4_000)));
        assert_eq!(report.steps[0].last_at_us, 5_000);
    }

    #[test]
    fn merged_reports_add_up() {
        let mut a = Tally::default();
        let mut b = Tally::default();
        a.receive(&mut Sequence::default(), stamp(0, 1), 2_000);
        b.receive(&mut Sequence::default(), Stamp { step: 1, ..stamp(0, 1) }, 4_000);
        b.error("boom".into());
        let mut merged = a.report();
        merged.merge(&b.report());
        assert_eq!((merged.delivered(0), merged.delivered(1), merged.errors), (1, 1, 1));
        assert_eq!(merged.latency(1).len(), 1);
        assert_eq!(merged.error_samples, ["boom"]);
    }
}
