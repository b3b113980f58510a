//! One subscriber's stream of payloads, whatever the server and the transport: Herald through
//! `herald-client`'s subscriptions, Nchan through the client's raw WebSocket and HTTP escape hatches and the
//! locations of `bench/nchan/nginx.conf.template`.
//!
//! Pusher servers (Herald's Pusher protocol, Soketi) through raw Pusher frames over the client's WebSocket.
//!
//! With `--client plain`, every server through the bare WebSocket client of `plain_ws.rs` instead.
//!
//! A feed yields the payload bytes exactly as published (Herald's `data`, Nchan's raw body, a Pusher event's
//! `data` string). Every
//! subscription is open — the server has registered it — when [`Feed::open`] returns, except Nchan's long
//! polls, whose first request is only answered with a message: the coordinator leaves time for those.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use herald_client::sse_parser::SseParser;
use herald_client::{Client, Event, HttpStream, SubscribeOptions, Subscription, TextWebSocket};

use crate::plain_ws::PlainWebSocket;
use crate::pusher;
use crate::spec::{Target, Transport};

/// A subscriber's source of payloads.
pub(crate) enum Feed {
    Herald(Box<Subscription>),
    NchanWs(TextWebSocket),
    NchanSse {
        stream: HttpStream,
        parser: SseParser,
        queue: VecDeque<String>,
    },
    NchanPoll {
        client: Client,
        route: String,
        validators: Validators,
        interval: Option<Duration>,
    },
    Pusher(TextWebSocket),
    /// The cross-check client's WebSocket, for any server (`plain_ws.rs`).
    Plain(PlainWebSocket),
}

/// Nchan's position for a polling subscriber: the previous answer's `Last-Modified` and `Etag`, sent back as
/// `If-Modified-Since` and `If-None-Match`.
#[derive(Debug, Default)]
pub(crate) struct Validators {
    last_modified: Option<String>,
    etag: Option<String>,
}

type FeedResult = Result<Bytes, String>;

impl Feed {
    /// Subscribes to `channel`.
    pub(crate) async fn open(
        client: &Client,
        target: Target,
        transport: Transport,
        channel: &str,
        poll_interval: Duration,
    ) -> Result<Self, String> {
        match target {
            Target::HeraldPusher | Target::Soketi => match transport {
                Transport::Ws => Ok(Self::Pusher(pusher_subscribe(client, channel).await?)),
                other => Err(format!("a Pusher server is followed over WebSocket, not {}", other.name())),
            },
            Target::Herald | Target::Floor => {
                let transport = herald_transport(transport, poll_interval);
                let sub = client.subscribe(SubscribeOptions::new([channel], transport)).await.map_err(show)?;
                Ok(Self::Herald(Box::new(sub)))
            }
            Target::Nchan => match transport {
                Transport::Ws => Ok(Self::NchanWs(client.websocket(&format!("/sub/{channel}")).await.map_err(show)?)),
                Transport::Sse => {
                    let headers = [("accept", "text/event-stream")];
                    let stream =
                        client.request_stream("GET", &format!("/sub/{channel}"), &headers).await.map_err(show)?;
                    if stream.status != 200 {
                        return Err(format!("Nchan answered the event stream with {}", stream.status));
                    }
                    Ok(Self::NchanSse { stream, parser: SseParser::new(), queue: VecDeque::new() })
                }
                Transport::LongPoll => Ok(Self::NchanPoll {
                    client: client.clone(),
                    route: format!("/sub/{channel}"),
                    validators: Validators::default(),
                    interval: None,
                }),
                Transport::Poll => Ok(Self::NchanPoll {
                    client: client.clone(),
                    route: format!("/poll/{channel}"),
                    validators: Validators::default(),
                    interval: Some(poll_interval),
                }),
            },
        }
    }

    /// Subscribes again to Herald's `channel` from `cursor`, as a client resumes after a drop; other servers
    /// have no cursor to resume from.
    pub(crate) async fn resume(
        client: &Client,
        transport: Transport,
        channel: &str,
        cursor: &str,
        poll_interval: Duration,
    ) -> Result<Self, String> {
        let options = SubscribeOptions::new([channel], herald_transport(transport, poll_interval)).since(cursor);
        Ok(Self::Herald(Box::new(client.subscribe(options).await.map_err(show)?)))
    }

    /// Where a Herald subscription stands, to resume it; `None` for other servers.
    pub(crate) fn cursor(&self) -> Option<String> {
        match self {
            Self::Herald(sub) => Some(sub.cursor()),
            _ => None,
        }
    }

    /// The next payload; `None` when the subscription ended without an error.
    pub(crate) async fn next(&mut self) -> Option<FeedResult> {
        match self {
            Self::Herald(sub) => Some(match sub.next().await? {
                // `data` is the published JSON; written back it is the payload's exact text.
                Ok(Event::Message(envelope)) => serde_json::to_vec(&envelope.data).map(Bytes::from).map_err(show),
                Ok(Event::Reset { channels }) => Err(format!("reset on {channels:?}")),
                Err(err) => Err(show(err)),
            }),
            Self::NchanWs(socket) => Some(socket.next().await?.map_err(show)),
            Self::NchanSse { stream, parser, queue } => loop {
                if let Some(data) = queue.pop_front() {
                    return Some(Ok(Bytes::from(data)));
                }
                let chunk = match stream.chunk().await? {
                    Ok(chunk) => chunk,
                    Err(err) => return Some(Err(show(err))),
                };
                let mut events = Vec::new();
                if let Err(err) = parser.feed(&chunk, &mut events) {
                    return Some(Err(err.to_string()));
                }
                queue.extend(events.into_iter().filter(|e| e.event == "message").map(|e| e.data));
            },
            Self::NchanPoll { client, route, validators, interval } => {
                Some(nchan_poll(client, route, validators, *interval).await)
            }
            Self::Pusher(socket) => pusher_next(socket).await,
            Self::Plain(socket) => socket.next().await,
        }
    }
}

/// Connects as pusher-js does and subscribes to the public `channel`; returns once the server confirmed it.
async fn pusher_subscribe(client: &Client, channel: &str) -> Result<TextWebSocket, String> {
    let mut socket = client.websocket(&pusher::websocket_route()).await.map_err(show)?;
    let mut established = false;
    loop {
        let text = socket.next().await.ok_or("the Pusher server closed before subscribing")?.map_err(show)?;
        let frame = pusher::Frame::parse(&text)?;
        match frame.event.as_str() {
            "pusher:connection_established" if !established => {
                established = true;
                socket.send(&pusher::subscribe_frame(channel)).await.map_err(show)?;
            }
            "pusher_internal:subscription_succeeded" => return Ok(socket),
            "pusher:ping" => socket.send(pusher::PONG).await.map_err(show)?,
            _ => return Err(format!("unexpected Pusher frame while subscribing: {}", String::from_utf8_lossy(&text))),
        }
    }
}

/// The next published event's `data` string, answering pings on the way.
async fn pusher_next(socket: &mut TextWebSocket) -> Option<FeedResult> {
    loop {
        let text = match socket.next().await? {
            Ok(text) => text,
            Err(err) => return Some(Err(show(err))),
        };
        let frame = match pusher::Frame::parse(&text) {
            Ok(frame) => frame,
            Err(err) => return Some(Err(err)),
        };
        match frame.event.as_str() {
            pusher::EVENT => {
                return Some(frame.data_text().map(|d| Bytes::from(d.to_owned())).ok_or("an event without data".into()))
            }
            "pusher:ping" => {
                if let Err(err) = socket.send(pusher::PONG).await {
                    return Some(Err(show(err)));
                }
            }
            "pusher:error" => return Some(Err(format!("Pusher error: {}", String::from_utf8_lossy(&text)))),
            _ => {}
        }
    }
}

fn herald_transport(transport: Transport, poll_interval: Duration) -> herald_client::Transport {
    match transport {
        Transport::Ws => herald_client::Transport::WebSocket,
        Transport::Sse => herald_client::Transport::Sse,
        Transport::LongPoll => herald_client::Transport::LongPoll,
        Transport::Poll => herald_client::Transport::Poll { interval: poll_interval },
    }
}

/// Polls Nchan until it answers a message: `304` (nothing new for a short poll) and `408` (a long poll's
/// timeout) ask again.
async fn nchan_poll(
    client: &Client,
    route: &str,
    validators: &mut Validators,
    interval: Option<Duration>,
) -> FeedResult {
    loop {
        let mut headers = Vec::new();
        if let Some(since) = &validators.last_modified {
            headers.push(("if-modified-since", since.as_str()));
        }
        if let Some(etag) = &validators.etag {
            headers.push(("if-none-match", etag.as_str()));
        }
        let answer = client.request("GET", route, &headers, b"").await.map_err(show)?;
        match answer.status {
            200 => {
                validators.last_modified = answer.header("last-modified").map(str::to_string);
                validators.etag = answer.header("etag").map(str::to_string);
                return Ok(answer.body);
            }
            304 | 408 => {
                if let Some(interval) = interval {
                    tokio::time::sleep(interval).await;
                }
            }
            status => return Err(format!("Nchan answered a poll with {status}")),
        }
    }
}

/// An error with its causes, on one line.
pub(crate) fn show(err: impl std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
