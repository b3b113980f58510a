//! Long and short polling: `GET /v1/poll?channel=…&since=…` in a loop that carries the answer's cursor.
//!
//! Long polling adds `wait`, so the server holds each request until there is news; short polling asks
//! without `wait` and pauses between requests. Opening makes the first request without `wait`, which fixes
//! the starting position (`since=latest` when the caller gave neither `since` nor `last`, so that polling
//! starts from now like the streaming transports). An answer's `cursor` lies after all its messages; while
//! they are being handed out one by one, the cursor is the previous answer's with each returned message's
//! own position merged in, so a caller that stops half-way resumes exactly there.

use std::collections::VecDeque;
use std::time::Duration;

use herald_proto::Cursor;
use serde::Deserialize;

use super::{server_cursor, Event, SubscribeOptions};
use crate::client::Client;
use crate::error::ClientError;
use crate::url::Query;

/// How long the server is asked to hold a long poll (it clamps this to its `max_wait_secs`).
pub const LONG_POLL_WAIT_SECS: u32 = 30;
/// The most messages asked for per request (the server's maximum); a full answer is followed at once by
/// another request.
pub const POLL_LIMIT: usize = 1000;

/// Long or short polling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Long,
    Short(Duration),
}

/// The answer of `/v1/poll`.
#[derive(Debug, Deserialize)]
struct PollAnswer {
    messages: Vec<herald_proto::Envelope>,
    cursor: String,
    #[serde(default)]
    reset: bool,
    #[serde(default)]
    reset_channels: Vec<String>,
}

/// The route and query of one poll.
fn poll_route(channels: &[String], since: Option<&str>, last: Option<u32>, wait: Option<u32>) -> String {
    let mut query = Query::default();
    for channel in channels {
        query.push("channel", channel);
    }
    if let Some(since) = since {
        query.push("since", since);
    }
    if let Some(last) = last {
        query.push("last", &last.to_string());
    }
    query.push("limit", &POLL_LIMIT.to_string());
    if let Some(wait) = wait {
        query.push("wait", &wait.to_string());
    }
    query.after("/v1/poll")
}

pub(super) struct PollSubscription {
    client: Client,
    channels: Vec<String>,
    mode: Mode,
    queue: VecDeque<Event>,
    /// Where the caller stands while the queue is not empty.
    returned: Cursor,
    /// The last answer's cursor: where the caller stands once the queue is empty, and the next `since`.
    answered: String,
    /// The last answer was full: ask again without pausing.
    more: bool,
    done: bool,
}

impl PollSubscription {
    pub(super) async fn open(client: &Client, options: &SubscribeOptions, mode: Mode) -> Result<Self, ClientError> {
        let since = match (&options.since, options.last) {
            (Some(since), _) => Some(since.as_str()),
            (None, None) => Some("latest"),
            (None, Some(_)) => None,
        };
        let mut sub = Self {
            client: client.clone(),
            channels: options.channels.clone(),
            mode,
            queue: VecDeque::new(),
            returned: Cursor::new(),
            answered: since.unwrap_or_default().to_string(),
            more: false,
            done: false,
        };
        let answer = sub.poll(since, options.last, None).await?;
        sub.take(answer)?;
        Ok(sub)
    }

    async fn poll(&self, since: Option<&str>, last: Option<u32>, wait: Option<u32>) -> Result<PollAnswer, ClientError> {
        let route = poll_route(&self.channels, since, last, wait);
        self.client.request("GET", &route, &[("accept", "application/json")], b"").await?.json()
    }

    /// Queues an answer's events and moves on to its cursor.
    fn take(&mut self, answer: PollAnswer) -> Result<(), ClientError> {
        // The previous answer's cursor is not one only before the first answer (`latest`, or none with `last`).
        self.returned = server_cursor(&self.answered).unwrap_or_default();
        if answer.reset {
            let channels = match answer.reset_channels.is_empty() {
                true => self.channels.clone(),
                false => answer.reset_channels,
            };
            self.queue.push_back(Event::Reset { channels });
        }
        self.more = answer.messages.len() >= POLL_LIMIT;
        self.queue.extend(answer.messages.into_iter().map(Event::Message));
        server_cursor(&answer.cursor)?;
        self.answered = answer.cursor;
        Ok(())
    }

    pub(super) async fn next(&mut self) -> Option<Result<Event, ClientError>> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                if let Event::Message(envelope) = &event {
                    match server_cursor(&envelope.cursor) {
                        Ok(position) => self.returned.merge(position),
                        Err(err) => return self.fail(err),
                    }
                }
                return Some(Ok(event));
            }
            if self.done {
                return None;
            }
            let wait = match self.mode {
                Mode::Long => Some(LONG_POLL_WAIT_SECS),
                Mode::Short(interval) => {
                    if !self.more {
                        tokio::time::sleep(interval).await;
                    }
                    None
                }
            };
            let answer = match self.poll(Some(&self.answered), None, wait).await {
                Ok(answer) => answer,
                Err(err) => return self.fail(err),
            };
            if let Err(err) = self.take(answer) {
                return self.fail(err);
            }
        }
    }

    fn fail(&mut self, err: ClientError) -> Option<Result<Event, ClientError>> {
        self.done = true;
        self.queue.clear();
        Some(Err(err))
    }

    pub(super) fn cursor(&self) -> String {
        match self.queue.is_empty() {
            true => self.answered.clone(),
            false => self.returned.encode(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channels() -> Vec<String> {
        vec!["a".into(), "orders/42".into()]
    }

    #[test]
    fn a_long_poll_names_every_channel_and_waits() {
        assert_eq!(
            poll_route(&channels(), Some("AQ"), None, Some(30)),
            "/v1/poll?channel=a&channel=orders/42&since=AQ&limit=1000&wait=30"
        );
    }

    #[test]
    fn a_short_poll_does_not_wait_and_the_first_may_replay_the_last_messages() {
        assert_eq!(
            poll_route(&channels(), None, Some(5), None),
            "/v1/poll?channel=a&channel=orders/42&last=5&limit=1000"
        );
    }
}
