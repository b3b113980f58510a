//! Publishing over HTTP, as a backend would: each publisher keeps one connection open and sends one message
//! at a time (each waits for the server's acknowledgement), paced to a rate or flat out.
//!
//! Publisher `p` numbers its own messages per channel (1, 2, 3 …) and stamps them into the payload, so
//! subscribers check order per publisher even when several publish to the same channel at once. With as
//! many channels as publishers or more, each publisher takes its own share of the channels.

use std::time::{Duration, Instant};

use herald_client::{Client, HttpConnection};
use serde_json::value::RawValue;

use crate::feed::show;
use crate::payload::{encode, now_us, Stamp};
use crate::pusher;
use crate::spec::{channel_name, local_ip, Target};

/// One publisher connection and the sequence numbers it has given out.
pub(crate) struct Publisher {
    index: u32,
    client: Client,
    connection: Option<HttpConnection>,
    target: Target,
    /// The channels it publishes to, in turn, with their names.
    channels: Vec<(u32, String)>,
    next: usize,
    /// The last sequence number acknowledged, per entry of `channels`.
    acknowledged: Vec<u64>,
    payload_bytes: usize,
}

/// What one publisher did in one step.
#[derive(Debug, Default, Clone)]
pub(crate) struct Published {
    pub(crate) ok: u64,
    pub(crate) errors: u64,
    pub(crate) error_samples: Vec<String>,
}

impl Publisher {
    /// Publisher `index` of `publishers`, for a run with `channels` channels.
    pub(crate) fn new(
        client: &Client,
        target: Target,
        run: &str,
        index: u32,
        publishers: u32,
        channels: u32,
        payload_bytes: usize,
    ) -> Self {
        let mine: Vec<u32> = match channels >= publishers {
            true => (index..channels).step_by(publishers as usize).collect(),
            false => (0..channels).collect(),
        };
        Self {
            index,
            client: client.clone().with_local_ip(local_ip(2, index)),
            connection: None,
            target,
            acknowledged: vec![0; mine.len()],
            channels: mine.into_iter().map(|c| (c, channel_name(run, c))).collect(),
            next: 0,
            payload_bytes,
        }
    }

    /// `(channel, last acknowledged sequence number)` for every channel it publishes to.
    pub(crate) fn acknowledged(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.channels.iter().zip(&self.acknowledged).map(|((c, _), &seq)| (*c, seq))
    }

    /// Sends messages of step `step` until `until`: one every `period` (none: each as soon as the previous is
    /// acknowledged).
    pub(crate) async fn publish(&mut self, step: u32, until: Instant, period: Option<Duration>) -> Published {
        let mut done = Published::default();
        let start = Instant::now();
        for i in 0u32.. {
            if let Some(period) = period {
                let at = start + period.mul_f64(f64::from(i));
                if at >= until {
                    break;
                }
                tokio::time::sleep_until(at.into()).await;
            } else if Instant::now() >= until {
                break;
            }
            self.publish_counted(step, &mut done).await;
        }
        done
    }

    /// Sends messages of step `step` flat out until each of its channels has `per_channel` acknowledged, or
    /// until `until`.
    pub(crate) async fn fill(&mut self, step: u32, per_channel: u64, until: Instant) -> Published {
        let mut done = Published::default();
        while self.acknowledged.iter().any(|&n| n < per_channel) && Instant::now() < until {
            self.publish_counted(step, &mut done).await;
        }
        done
    }

    /// Publishes one message and counts it in `done`, keeping the first three errors as samples.
    async fn publish_counted(&mut self, step: u32, done: &mut Published) {
        match self.publish_one(step).await {
            Ok(()) => done.ok += 1,
            Err(err) => {
                done.errors += 1;
                if done.error_samples.len() < 3 {
                    done.error_samples.push(err);
                }
                // The connection may be gone; the next message opens another.
                self.connection = None;
            }
        }
    }

    async fn publish_one(&mut self, step: u32) -> Result<(), String> {
        if self.channels.is_empty() {
            return Ok(());
        }
        let slot = self.next;
        self.next = (self.next + 1) % self.channels.len();
        let seq = self.acknowledged[slot] + 1;
        let stamp = Stamp { step, publisher: self.index, seq, sent_us: now_us() };
        let payload = encode(stamp, self.payload_bytes);
        let connection = match &mut self.connection {
            Some(connection) => connection,
            empty => empty.insert(self.client.connect_http().await.map_err(show)?),
        };
        let channel = &self.channels[slot].1;
        match self.target {
            Target::Herald | Target::Floor => {
                let data = RawValue::from_string(String::from_utf8_lossy(&payload).into_owned()).map_err(show)?;
                connection.publish(channel, None, &data).await.map_err(show)?;
            }
            Target::HeraldPusher | Target::Soketi => {
                let body = pusher::event_body(channel, &String::from_utf8_lossy(&payload));
                let route = pusher::signed_events_route(body.as_bytes(), now_us() / 1_000_000);
                let headers = [("content-type", "application/json")];
                let answer = connection.request("POST", &route, &headers, body.as_bytes()).await.map_err(show)?;
                if answer.status != 200 {
                    let text = String::from_utf8_lossy(&answer.body);
                    return Err(format!("the Pusher server answered a trigger with {}: {text}", answer.status));
                }
                // Soketi closes every API connection after its answer: open the next one afresh.
                if answer.header("connection").is_some_and(|c| c.eq_ignore_ascii_case("close")) {
                    self.connection = None;
                }
            }
            Target::Nchan => {
                let headers = [("content-type", "text/plain")];
                let answer =
                    connection.request("POST", &format!("/pub/{channel}"), &headers, &payload).await.map_err(show)?;
                if !matches!(answer.status, 201 | 202) {
                    return Err(format!("Nchan answered a publish with {}", answer.status));
                }
            }
        }
        self.acknowledged[slot] = seq;
        Ok(())
    }
}

/// `published[channel][publisher]`: the last sequence number each publisher had acknowledged per channel.
pub(crate) fn published_table(publishers: &[Publisher], channels: u32) -> Vec<Vec<u64>> {
    let mut table = vec![vec![0; publishers.len()]; channels as usize];
    for (p, publisher) in publishers.iter().enumerate() {
        for (channel, seq) in publisher.acknowledged() {
            table[channel as usize][p] = seq;
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publisher(index: u32, publishers: u32, channels: u32) -> Publisher {
        let client = Client::new("http://127.0.0.1:1").unwrap();
        Publisher::new(&client, Target::Herald, "t", index, publishers, channels, 100)
    }

    #[test]
    fn publishers_share_many_channels_and_all_publish_to_few() {
        let mine: Vec<u32> = publisher(1, 3, 8).acknowledged().map(|(c, _)| c).collect();
        assert_eq!(mine, [1, 4, 7]);
        let all: Vec<u32> = publisher(2, 3, 1).acknowledged().map(|(c, _)| c).collect();
        assert_eq!(all, [0]);
    }

    #[test]
    fn the_table_lists_each_publishers_count_per_channel() {
        let mut a = publisher(0, 2, 1);
        let b = publisher(1, 2, 1);
        a.acknowledged[0] = 5;
        assert_eq!(published_table(&[a, b], 1), vec![vec![5, 0]]);
    }
}
