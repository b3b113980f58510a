//! One connection to one Redis Cluster primary, holding this node's sharded subscriptions on it.
//!
//! Herald keeps these connections itself instead of using redis-rs's cluster connection for Pub/Sub: that
//! connection replaces a node's connection on its own (after a failed `PING` during a slot refresh) and then
//! resubscribes with one `SSUBSCRIBE` of every channel the node owns, which Redis refuses with `CROSSSLOT` as
//! soon as they span two slots, silently. Here a subscription lives exactly as long as its connection, and the
//! follower (`sharded.rs`) hears of every end of it: the connection closing ([`Pushed::Closed`]), or the shard
//! dropping it when its slot moves away ([`Pushed::Dropped`]).
//!
//! The connection speaks RESP3 (`HELLO 3`), so messages arrive as pushes beside the replies. Redis answers the
//! commands of one connection in order, and a subscription command is answered by exactly one confirmation push
//! or one error, so the replies are matched to the waiting commands first in, first out. A `PING` every
//! [`PING_EVERY`] finds a connection that died without a word (a cut network); no answer within the command
//! timeout ends the link as if Redis had closed it.
//!
//! Queues: commands wait in [`REQUESTS`] slots (a caller finding it full waits); pushes are handed on through the
//! follower's bounded queue, and while it is full this link stops reading its socket. Redis then buffers for us,
//! up to its `client-output-buffer-limit pubsub`, past which it closes the connection: the follower subscribes
//! every channel again and catches each up from history, so a slow node loses nothing, it falls back to reads.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use super::resp3::{self, Frame};

/// Commands waiting for the connection's task.
const REQUESTS: usize = 256;
/// How often an otherwise quiet link checks that Redis still answers.
const PING_EVERY: Duration = Duration::from_secs(5);
/// The read buffer starts this large and grows with what one frame needs.
const READ_CHUNK: usize = 16 * 1024;

/// How to reach one primary: its address and the seed URLs' credentials.
#[derive(Clone, Debug)]
pub(super) struct Endpoint {
    pub addr: String,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// Why a subscription command did not take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum Refused {
    /// The slot is served by another primary.
    #[error("moved to {0}")]
    Moved(String),
    /// Any other error reply (`CLUSTERDOWN`, `TRYAGAIN`, a refused `AUTH`…).
    #[error("redis answered: {0}")]
    Error(String),
    /// The link ended before the answer.
    #[error("the connection to the shard closed")]
    Closed,
    /// No answer within the command timeout.
    #[error("no answer in time")]
    Timeout,
}

/// What a link tells the follower without being asked.
#[derive(Debug)]
pub(super) enum Pushed {
    /// A message on a subscribed Pub/Sub channel.
    Message(Bytes, Bytes),
    /// The shard dropped a subscription this node did not give up: its slot moved to another primary.
    Dropped(Bytes),
    /// The connection ended; every subscription on it is gone.
    Closed,
}

/// A push, with the link it came from.
#[derive(Debug)]
pub(super) struct LinkEvent {
    pub addr: Arc<str>,
    pub generation: u64,
    pub pushed: Pushed,
}

enum Command {
    Subscribe(Bytes),
    Unsubscribe(Bytes),
    Ping,
}

/// Where the answer to a command goes.
type Reply = oneshot::Sender<Result<(), Refused>>;

struct Request {
    command: Command,
    reply: Reply,
}

/// A handle on one link; the link ends when the last handle is dropped or its connection does.
#[derive(Clone)]
pub(super) struct ShardLink {
    requests: mpsc::Sender<Request>,
    timeout: Duration,
}

impl ShardLink {
    /// Connects to `endpoint`, switches to RESP3 (authenticating with the seeds' credentials), and starts the
    /// link's task, which hands its pushes to `events` tagged with `generation`.
    pub(super) async fn connect(
        endpoint: &Endpoint,
        generation: u64,
        timeout: Duration,
        events: mpsc::Sender<LinkEvent>,
    ) -> Result<Self, Refused> {
        let mut stream = tokio::time::timeout(timeout, TcpStream::connect(&endpoint.addr))
            .await
            .map_err(|_| Refused::Timeout)?
            .map_err(|err| Refused::Error(format!("connecting to {}: {err}", endpoint.addr)))?;
        // A connection to a port nobody listens on can, rarely, connect to itself (TCP's simultaneous open, when
        // the kernel picks the same port as the local end): it would hold the port the restarting Redis needs.
        if matches!((stream.local_addr(), stream.peer_addr()), (Ok(local), Ok(peer)) if local == peer) {
            return Err(Refused::Error(format!("connecting to {}: connected to itself", endpoint.addr)));
        }
        let _ = stream.set_nodelay(true);
        let mut hello: Vec<&[u8]> = vec![b"HELLO", b"3"];
        if let Some(password) = &endpoint.password {
            hello.extend([&b"AUTH"[..], endpoint.username.as_deref().unwrap_or("default").as_bytes()]);
            hello.push(password.as_bytes());
        }
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let answer = tokio::time::timeout(timeout, async {
            stream.write_all(&resp3::command(&hello)).await.map_err(|_| Refused::Closed)?;
            read_frame(&mut stream, &mut buf).await
        })
        .await
        .map_err(|_| Refused::Timeout)??;
        match answer {
            Frame::Map(_) => {}
            Frame::Error(text) => return Err(Refused::Error(String::from_utf8_lossy(&text).into_owned())),
            other => return Err(Refused::Error(format!("{}: HELLO 3 answered {other:?}", endpoint.addr))),
        }
        let (requests, receiver) = mpsc::channel(REQUESTS);
        let addr: Arc<str> = endpoint.addr.as_str().into();
        let task = Task { stream, buf, receiver, pending: VecDeque::new(), events, addr, generation, timeout };
        tokio::spawn(task.run());
        Ok(Self { requests, timeout })
    }

    /// `SSUBSCRIBE name`: done once Redis confirmed it.
    pub(super) async fn subscribe(&self, name: Bytes) -> Result<(), Refused> {
        self.ask(Command::Subscribe(name)).await
    }

    /// `SUNSUBSCRIBE name`.
    pub(super) async fn unsubscribe(&self, name: Bytes) -> Result<(), Refused> {
        self.ask(Command::Unsubscribe(name)).await
    }

    async fn ask(&self, command: Command) -> Result<(), Refused> {
        let (reply, answer) = oneshot::channel();
        self.requests.send(Request { command, reply }).await.map_err(|_| Refused::Closed)?;
        match tokio::time::timeout(self.timeout, answer).await {
            Err(_) => Err(Refused::Timeout),
            Ok(Err(_)) => Err(Refused::Closed),
            Ok(Ok(result)) => result,
        }
    }
}

/// Reads from `stream` into `buf` until one whole frame is there, and takes it.
async fn read_frame(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<Frame, Refused> {
    loop {
        if let Some((frame, used)) = resp3::parse(buf).map_err(|err| Refused::Error(err.to_string()))? {
            let _ = buf.split_to(used);
            return Ok(frame);
        }
        buf.reserve(READ_CHUNK);
        if stream.read_buf(buf).await.map_err(|_| Refused::Closed)? == 0 {
            return Err(Refused::Closed);
        }
    }
}

/// The task owning one connection.
struct Task {
    stream: TcpStream,
    buf: BytesMut,
    receiver: mpsc::Receiver<Request>,
    /// Commands sent and not answered yet, oldest first, with whom to tell.
    pending: VecDeque<(Command, Option<Reply>)>,
    events: mpsc::Sender<LinkEvent>,
    addr: Arc<str>,
    generation: u64,
    timeout: Duration,
}

impl Task {
    async fn run(mut self) {
        let why = self.serve().await;
        tracing::debug!(addr = %self.addr, why, "a sharded subscription link ended");
        // Whatever still waits for an answer learns of the end as `Closed` when its sender drops here.
        self.pending.clear();
        let _ = self.events.send(self.event(Pushed::Closed)).await;
    }

    fn event(&self, pushed: Pushed) -> LinkEvent {
        LinkEvent { addr: self.addr.clone(), generation: self.generation, pushed }
    }

    /// Runs until the connection ends or nobody holds the link; says why.
    async fn serve(&mut self) -> &'static str {
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.reset();
        let mut ping_sent: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                request = self.receiver.recv() => {
                    let Some(Request { command, reply }) = request else { return "released" };
                    if self.send(command, Some(reply)).await.is_err() {
                        return "write failed";
                    }
                }
                _ = ping.tick() => {
                    if ping_sent.is_some_and(|at| at.elapsed() >= self.timeout) {
                        return "no answer to PING";
                    }
                    if ping_sent.is_none() {
                        ping_sent = Some(tokio::time::Instant::now());
                        if self.send(Command::Ping, None).await.is_err() {
                            return "write failed";
                        }
                    }
                }
                read = self.stream.read_buf(&mut self.buf) => {
                    match read {
                        Ok(0) | Err(_) => return "closed by redis",
                        Ok(_) => {}
                    }
                    loop {
                        let frame = match resp3::parse(&self.buf) {
                            Ok(Some((frame, used))) => {
                                let _ = self.buf.split_to(used);
                                frame
                            }
                            Ok(None) => break,
                            Err(_) => return "unreadable reply",
                        };
                        match self.answer(frame).await {
                            Answered::Ping => ping_sent = None,
                            Answered::Other => {}
                            Answered::Confused => return "a reply that matches no command",
                        }
                    }
                    if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
                        self.buf.reserve(READ_CHUNK);
                    }
                }
            }
        }
    }

    async fn send(&mut self, command: Command, reply: Option<Reply>) -> std::io::Result<()> {
        let bytes = match &command {
            Command::Subscribe(name) => resp3::command(&[b"SSUBSCRIBE", name]),
            Command::Unsubscribe(name) => resp3::command(&[b"SUNSUBSCRIBE", name]),
            Command::Ping => resp3::command(&[b"PING"]),
        };
        self.pending.push_back((command, reply));
        self.stream.write_all(&bytes).await
    }

    /// Handles one frame from Redis: a push, or the answer to the oldest pending command.
    async fn answer(&mut self, frame: Frame) -> Answered {
        let (kind, name) = match &frame {
            Frame::Push(items) => match (items.first(), items.get(1)) {
                (Some(Frame::Bulk(kind)), Some(Frame::Bulk(name))) => (kind.clone(), name.clone()),
                _ => return Answered::Other,
            },
            Frame::Error(text) => {
                let refused = match std::str::from_utf8(text).ok().and_then(|t| t.strip_prefix("MOVED ")) {
                    Some(moved) => Refused::Moved(moved.split(' ').nth(1).unwrap_or_default().to_string()),
                    None => Refused::Error(String::from_utf8_lossy(text).into_owned()),
                };
                return self.reply(|_| true, Err(refused));
            }
            _ => return self.reply(|command| matches!(command, Command::Ping), Ok(())),
        };
        match &kind[..] {
            b"smessage" => {
                let Some(Frame::Bulk(payload)) = (match &frame {
                    Frame::Push(items) => items.get(2),
                    _ => None,
                }) else {
                    return Answered::Other;
                };
                let _ = self.events.send(self.event(Pushed::Message(name, payload.clone()))).await;
                Answered::Other
            }
            b"ssubscribe" => self.reply(|command| matches!(command, Command::Subscribe(n) if *n == name), Ok(())),
            b"sunsubscribe" => {
                let own = matches!(self.pending.front(), Some((Command::Unsubscribe(n), _)) if *n == name);
                if own {
                    return self.reply(|_| true, Ok(()));
                }
                let _ = self.events.send(self.event(Pushed::Dropped(name))).await;
                Answered::Other
            }
            _ => Answered::Other,
        }
    }

    /// Answers the oldest pending command, which must be one `expected` accepts.
    fn reply(&mut self, expected: impl Fn(&Command) -> bool, result: Result<(), Refused>) -> Answered {
        match self.pending.pop_front() {
            Some((command, reply)) if expected(&command) => {
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
                if matches!(command, Command::Ping) {
                    Answered::Ping
                } else {
                    Answered::Other
                }
            }
            _ => Answered::Confused,
        }
    }
}

enum Answered {
    Ping,
    Other,
    /// Redis answered something no pending command asked for: the link can no longer tell which answer is whose.
    Confused,
}
