//! What one node asks of every node for a Pusher app: send a signed-in user an event, or close the user's
//! connections. It goes through the hub's signals (the engine: directly with memory, one Redis Pub/Sub channel
//! with Redis), since the user's connections may sit on any node; each node's [`follow`] task hands it to the
//! user's local connections. Signals are not stored: a node that is cut from Redis when one is sent misses it
//! (documented in docs/PUSHER.md).

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;

use super::users::{Control, Users};
use super::wire::names::SERVER_TO_USER_PREFIX;
use super::wire::ServerFrame;
use crate::hub::{Hub, HubError};
use crate::shutdown::Shutdown;

/// A Pusher signal, as JSON on the hub's signals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "pusher", rename_all = "snake_case")]
pub enum Signal {
    /// Send `user` of app `app` the event `event` with the data string `data`.
    UserEvent {
        /// The app id.
        app: String,
        /// The user id.
        user: String,
        /// The event name.
        event: String,
        /// The data string, as the HTTP API gave it.
        data: String,
    },
    /// Close every connection of `user` of app `app`.
    Terminate {
        /// The app id.
        app: String,
        /// The user id.
        user: String,
    },
}

impl Signal {
    /// Sends the signal to every node.
    pub async fn send(&self, hub: &Hub) -> Result<(), HubError> {
        // Serialising strings cannot fail.
        hub.signal(Bytes::from(serde_json::to_vec(self).unwrap_or_default())).await
    }

    /// Hands the signal to the local connections it concerns; returns how many.
    pub fn hand(&self, users: &Users) -> usize {
        match self {
            Signal::UserEvent { app, user, event, data } => {
                let channel = format!("{SERVER_TO_USER_PREFIX}{user}");
                let frame = ServerFrame::Event {
                    event,
                    channel: &channel,
                    data: data.as_bytes(),
                    data_as_value: false,
                    user_id: None,
                };
                users.hand(app, user, &Control::Frame(Bytes::from(frame.encode())))
            }
            Signal::Terminate { app, user } => users.hand(app, user, &Control::Terminate),
        }
    }
}

/// Hands every Pusher signal any node sends to this node's connections, until shutdown. Other signals on the
/// hub are not Pusher's and are skipped.
pub async fn follow(hub: Arc<Hub>, users: Arc<Users>, shutdown: Shutdown) {
    let mut signals = hub.signals();
    loop {
        let received = tokio::select! {
            () = shutdown.cancelled() => return,
            received = signals.recv() => received,
        };
        match received {
            Ok(bytes) => {
                if let Ok(signal) = serde_json::from_slice::<Signal>(&bytes) {
                    signal.hand(&users);
                }
            }
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "pusher signals arrived faster than this node handed them on; some were lost")
            }
            Err(RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_are_tagged_json() {
        let terminate = Signal::Terminate { app: "1".into(), user: "u7".into() };
        let text = serde_json::to_string(&terminate).unwrap();
        assert_eq!(text, r#"{"pusher":"terminate","app":"1","user":"u7"}"#);
        assert_eq!(serde_json::from_str::<Signal>(&text).unwrap(), terminate);
    }

    #[test]
    fn a_user_event_becomes_a_frame_on_the_users_own_channel() {
        let users = Arc::new(Users::default());
        let (queue, mut rx) = tokio::sync::mpsc::channel(4);
        let _in = users.sign_in("1", "u7", queue, tokio_util::sync::CancellationToken::new());
        let signal =
            Signal::UserEvent { app: "1".into(), user: "u7".into(), event: "hello".into(), data: "{\"a\":1}".into() };
        assert_eq!(signal.hand(&users), 1);
        let Ok(Control::Frame(frame)) = rx.try_recv() else { panic!("a frame") };
        assert_eq!(&frame[..], br##"{"event":"hello","channel":"#server-to-user-u7","data":"{\"a\":1}"}"##);
    }
}
