//! The log of lifecycle events in this process's memory, for the embedded engine: one node, which always leads.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

use super::{Entry, EventLog, LifecycleEvent, LogId};
use crate::engine::{BoxFuture, EngineError};

/// How long [`EventLog::changed`] waits at most.
const WAIT: Duration = Duration::from_secs(1);

#[derive(Default)]
struct State {
    /// Entries kept at most; 0 while logging is off.
    capacity: usize,
    entries: VecDeque<Entry>,
    /// The last entry number given.
    n: u64,
    /// Readers' positions.
    acked: HashMap<String, LogId>,
}

/// The embedded engine's log.
pub struct MemoryLog {
    state: Mutex<State>,
    appended: Notify,
    /// Makes ids unique across restarts of the process: its start, in milliseconds.
    run: u64,
}

impl Default for MemoryLog {
    fn default() -> Self {
        Self { state: Mutex::default(), appended: Notify::new(), run: herald_proto::time::now_millis() }
    }
}

impl MemoryLog {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Pushes and pops of whole entries: consistent whenever they stop.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends `event` now, if logging is on (the presence store calls this under its own lock, so a channel's
    /// transitions are logged in the order they happen).
    pub fn record(&self, event: LifecycleEvent) {
        let mut state = self.lock();
        if state.capacity == 0 {
            return;
        }
        state.n += 1;
        let id = LogId { id: format!("{}-{}", self.run, state.n), n: state.n };
        state.entries.push_back(Entry { id, event });
        while state.entries.len() > state.capacity {
            state.entries.pop_front();
        }
        drop(state);
        self.appended.notify_waiters();
    }
}

impl EventLog for MemoryLog {
    fn enable(&self, capacity: usize) {
        self.lock().capacity = capacity;
    }

    fn append(&self, event: LifecycleEvent) -> BoxFuture<'_, Result<(), EngineError>> {
        self.record(event);
        Box::pin(std::future::ready(Ok(())))
    }

    fn read<'a>(&'a self, after: Option<&'a LogId>, limit: usize) -> BoxFuture<'a, Result<Vec<Entry>, EngineError>> {
        let state = self.lock();
        let after = after.map_or(0, |id| id.n);
        let entries = state.entries.iter().filter(|e| e.id.n > after).take(limit).cloned().collect();
        Box::pin(std::future::ready(Ok(entries)))
    }

    fn head(&self) -> BoxFuture<'_, Result<Option<LogId>, EngineError>> {
        let head = self.lock().entries.back().map(|e| e.id.clone());
        Box::pin(std::future::ready(Ok(head)))
    }

    fn acked<'a>(&'a self, reader: &'a str) -> BoxFuture<'a, Result<Option<LogId>, EngineError>> {
        let acked = self.lock().acked.get(reader).cloned();
        Box::pin(std::future::ready(Ok(acked)))
    }

    fn ack<'a>(&'a self, reader: &'a str, id: &'a LogId) -> BoxFuture<'a, Result<(), EngineError>> {
        self.lock().acked.insert(reader.to_owned(), id.clone());
        Box::pin(std::future::ready(Ok(())))
    }

    fn lead<'a>(&'a self, _node: &'a str, _ttl: Duration) -> BoxFuture<'a, Result<bool, EngineError>> {
        Box::pin(std::future::ready(Ok(true)))
    }

    fn changed<'a>(&'a self, after: Option<&'a LogId>) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let notified = self.appended.notified();
            let newer = self.lock().entries.back().is_some_and(|e| after.map_or(true, |a| e.id.n > a.n));
            if !newer {
                let _ = tokio::time::timeout(WAIT, notified).await;
            }
        })
    }
}
