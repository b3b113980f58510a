//! Signed-in users on this node: which connections each user of each app has, so that a server-to-user event
//! or a "terminate this user's connections" that reached this node (as a signal, from whichever node the API
//! request came to) finds them.
//!
//! Each signed-in connection has a bounded queue of what the registry hands it ([`Control`]), fed with
//! `try_send`: a connection whose queue is full is too slow and is told to end (its `overflow` token), as a slow
//! subscriber is.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Things a connection's queue may hold, at most.
pub const CONTROL_QUEUE: usize = 64;

/// What the registry hands a signed-in connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// A frame to send (a server-to-user event).
    Frame(Bytes),
    /// The app terminated the user's connections: close with 4009.
    Terminate,
}

/// A connection's place in the registry's list of a user.
struct Entry {
    id: u64,
    queue: mpsc::Sender<Control>,
    overflow: CancellationToken,
}

type UserKey = (String, String);

/// The registry.
#[derive(Default)]
pub struct Users {
    users: Mutex<HashMap<UserKey, Vec<Entry>>>,
    next: AtomicU64,
}

/// A connection's sign-in: removed from the registry when dropped.
pub struct SignedIn {
    users: Arc<Users>,
    key: UserKey,
    id: u64,
}

impl std::fmt::Debug for SignedIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedIn").field("user", &self.key.1).finish_non_exhaustive()
    }
}

impl Drop for SignedIn {
    fn drop(&mut self) {
        let mut users = self.users.users.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entries) = users.get_mut(&self.key) {
            entries.retain(|e| e.id != self.id);
            if entries.is_empty() {
                users.remove(&self.key);
            }
        }
    }
}

impl Users {
    /// Records that a connection of app `app` signed in as `user`; it gets what is handed to the user through
    /// `queue`, and `overflow` is cancelled when its queue is full.
    pub fn sign_in(
        self: &Arc<Self>,
        app: &str,
        user: &str,
        queue: mpsc::Sender<Control>,
        overflow: CancellationToken,
    ) -> SignedIn {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let key = (app.to_string(), user.to_string());
        let mut users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        users.entry(key.clone()).or_default().push(Entry { id, queue, overflow });
        SignedIn { users: self.clone(), key, id }
    }

    /// Hands `control` to every connection of `user` of app `app` on this node, without waiting; returns how many
    /// there were.
    pub fn hand(&self, app: &str, user: &str, control: &Control) -> usize {
        let users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(entries) = users.get(&(app.to_string(), user.to_string())) else { return 0 };
        for entry in entries {
            match entry.queue.try_send(control.clone()) {
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
                Err(mpsc::error::TrySendError::Full(_)) => entry.overflow.cancel(),
            }
        }
        entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_gets_what_is_handed_to_it_on_each_of_its_connections_until_they_sign_out() {
        let users = Arc::new(Users::default());
        let (a, mut a_rx) = mpsc::channel(4);
        let (b, mut b_rx) = mpsc::channel(4);
        let first = users.sign_in("1", "u7", a, CancellationToken::new());
        let _second = users.sign_in("1", "u7", b, CancellationToken::new());
        assert_eq!(users.hand("1", "u7", &Control::Terminate), 2);
        assert_eq!((a_rx.try_recv(), b_rx.try_recv()), (Ok(Control::Terminate), Ok(Control::Terminate)));
        assert_eq!(users.hand("2", "u7", &Control::Terminate), 0, "another app's user is another user");
        drop(first);
        assert_eq!(users.hand("1", "u7", &Control::Terminate), 1);
    }

    #[test]
    fn a_connection_whose_queue_is_full_is_told_to_end() {
        let users = Arc::new(Users::default());
        let (queue, _rx) = mpsc::channel(1);
        let overflow = CancellationToken::new();
        let _in = users.sign_in("1", "u", queue, overflow.clone());
        users.hand("1", "u", &Control::Frame(Bytes::from_static(b"1")));
        assert!(!overflow.is_cancelled());
        users.hand("1", "u", &Control::Frame(Bytes::from_static(b"2")));
        assert!(overflow.is_cancelled());
    }
}
