//! Herald's own counters, read from its `GET /metrics` (Prometheus text), for what the subscribers cannot
//! see from outside: how many of them the server dropped as slow, and how often it read history.

use std::ops::Sub;

use herald_client::Client;
use serde::Serialize;

use crate::feed::show;

/// The counters of `GET /metrics` a Redis blip moves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub(crate) struct Counters {
    /// `herald_slow_consumer_disconnects_total{transport="ws"}`.
    pub(crate) slow_consumer_ws: u64,
    /// `herald_history_reads_total`.
    pub(crate) history_reads: u64,
    /// `herald_catch_up_reads_total{by="subscriber"}`: reads of one subscription's own gap.
    pub(crate) catch_up_reads: u64,
    /// `herald_catch_up_reads_total{by="node"}`: the node's reads after its Pub/Sub link came back (one per
    /// followed channel, more when one failed and was retried).
    pub(crate) node_catch_up_reads: u64,
    /// `herald_messages_published_total`.
    pub(crate) published: u64,
}

impl Counters {
    /// Reads the counters from the text of `GET /metrics`; a missing one is 0.
    pub(crate) fn parse(text: &str) -> Self {
        let value = |series: &str| sample(text, series).unwrap_or(0.0) as u64;
        Self {
            slow_consumer_ws: value("herald_slow_consumer_disconnects_total{transport=\"ws\"}"),
            history_reads: value("herald_history_reads_total"),
            catch_up_reads: value("herald_catch_up_reads_total{by=\"subscriber\"}"),
            node_catch_up_reads: value("herald_catch_up_reads_total{by=\"node\"}"),
            published: value("herald_messages_published_total"),
        }
    }

    /// Asks the server.
    pub(crate) async fn fetch(client: &Client) -> Result<Self, String> {
        let answer = client.request("GET", "/metrics", &[], b"").await.map_err(show)?;
        if answer.status != 200 {
            return Err(format!("GET /metrics answered {}", answer.status));
        }
        Ok(Self::parse(&String::from_utf8_lossy(&answer.body)))
    }
}

impl Sub for Counters {
    type Output = Self;

    fn sub(self, before: Self) -> Self {
        Self {
            slow_consumer_ws: self.slow_consumer_ws.saturating_sub(before.slow_consumer_ws),
            history_reads: self.history_reads.saturating_sub(before.history_reads),
            catch_up_reads: self.catch_up_reads.saturating_sub(before.catch_up_reads),
            node_catch_up_reads: self.node_catch_up_reads.saturating_sub(before.node_catch_up_reads),
            published: self.published.saturating_sub(before.published),
        }
    }
}

/// The value of one series, named exactly as in the text (`name` or `name{labels}`).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# HELP herald_slow_consumer_disconnects_total Subscribers disconnected because their queue was full.
# TYPE herald_slow_consumer_disconnects_total counter
herald_slow_consumer_disconnects_total{transport=\"sse\"} 7
herald_slow_consumer_disconnects_total{transport=\"ws\"} 4999
herald_history_reads_total 10050
herald_history_reads_total_bogus 1
herald_catch_up_reads_total{by=\"subscriber\"} 3
herald_catch_up_reads_total{by=\"node\"} 50
";

    #[test]
    fn the_counters_are_read_by_their_exact_series() {
        let counters = Counters::parse(TEXT);
        assert_eq!(
            counters,
            Counters {
                slow_consumer_ws: 4_999,
                history_reads: 10_050,
                catch_up_reads: 3,
                node_catch_up_reads: 50,
                published: 0
            }
        );
    }

    #[test]
    fn a_difference_of_counters_is_what_happened_in_between() {
        let before = Counters { slow_consumer_ws: 1, history_reads: 50, published: 9, ..Counters::default() };
        let after = Counters::parse(TEXT);
        assert_eq!((after - before).history_reads, 10_000);
        assert_eq!((before - after).slow_consumer_ws, 0);
    }
}
