//! Guest output as it is written, for those following a worker live (`golemw serve`'s
//! `connect`). The gate publishes each `log` entry it appends live, before any commit, only
//! while someone follows that worker: with no follower the cost is one atomic load.
//!
//! Live output may be of an attempt that is then rolled back (a failed commit, a retry): a
//! follower sees it, and later the entry that replaced it under the same oplog index. Those
//! who want only what is durable read committed `log` entries from the oplog instead.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::ids::{OplogIndex, WorkerId};
use crate::oplog::LogStream;

/// Output events a slow follower may fall behind by before it misses some (it is told).
const FOLLOWER_BACKLOG: usize = 256;

/// One write of a guest to stdout or stderr, as recorded under `index`.
#[derive(Clone, Debug)]
pub struct LiveOutput {
    pub index: OplogIndex,
    pub stream: LogStream,
    pub bytes: Arc<[u8]>,
}

/// Who follows which worker's output.
#[derive(Default)]
pub struct OutputTap {
    channels: Mutex<HashMap<WorkerId, broadcast::Sender<LiveOutput>>>,
    /// Workers with a channel: lets `publish` return at once when nobody follows anyone.
    followed: AtomicUsize,
}

impl OutputTap {
    /// Follows `worker`'s output from now on.
    pub fn subscribe(&self, worker: &WorkerId) -> broadcast::Receiver<LiveOutput> {
        let mut channels = self.channels.lock().expect("output tap poisoned");
        // Channels whose followers are all gone are dropped here, not on every write.
        channels.retain(|_, sender| sender.receiver_count() > 0);
        let receiver = channels
            .entry(worker.clone())
            .or_insert_with(|| broadcast::channel(FOLLOWER_BACKLOG).0)
            .subscribe();
        self.followed.store(channels.len(), Ordering::Release);
        receiver
    }

    /// Whether anyone may follow `worker` (cheap; `publish` checks again).
    pub fn wanted(&self, worker: &WorkerId) -> bool {
        self.followed.load(Ordering::Acquire) > 0
            && self
                .channels
                .lock()
                .expect("output tap poisoned")
                .get(worker)
                .is_some_and(|sender| sender.receiver_count() > 0)
    }

    /// Hands a write to `worker`'s followers, if any.
    pub fn publish(&self, worker: &WorkerId, output: LiveOutput) {
        if self.followed.load(Ordering::Acquire) == 0 {
            return;
        }
        if let Some(sender) = self
            .channels
            .lock()
            .expect("output tap poisoned")
            .get(worker)
        {
            // No follower left: nothing to do until the next subscribe drops the channel.
            let _ = sender.send(output);
        }
    }
}
