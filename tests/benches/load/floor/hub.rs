//! The floor's routing state: tag → subscribed connections, and per connection an outbox of
//! tags still to tell it.
//!
//! The outbox is a set of tags, not a queue, as docs/protocol.md describes: a connection
//! that reads slowly gets several changes merged into one `outdated` frame, and its memory
//! stays bounded by the tags it tracks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// Identifies a connection in the index.
pub type ConnId = u64;

/// What the hub holds for one connection; shared by its session task and the index.
#[derive(Debug)]
pub struct Outbox {
    /// The connection's user; changes by this author are not routed to it.
    pub user: Option<Arc<str>>,
    /// Tags changed since the session last wrote a frame, in first-changed order, without
    /// duplicates. Filled by publishers, emptied by the session.
    pending: Mutex<Vec<Arc<str>>>,
    /// Woken after every publish that added tags; the session waits on it.
    pub wake: Notify,
}

impl Outbox {
    /// An empty outbox for a connection of `user`.
    pub fn new(user: Option<Arc<str>>) -> Outbox {
        Outbox {
            user,
            pending: Mutex::new(Vec::new()),
            wake: Notify::new(),
        }
    }

    /// Takes the tags to tell, leaving the outbox empty.
    pub fn take(&self) -> Vec<Arc<str>> {
        std::mem::take(&mut *lock(&self.pending))
    }

    fn add(&self, tags: &[Arc<str>]) {
        let mut pending = lock(&self.pending);
        for tag in tags {
            // Linear search: a connection tracks a handful of tags, and at most 1,000.
            if !pending.iter().any(|p| Arc::ptr_eq(p, tag)) {
                pending.push(Arc::clone(tag));
            }
        }
        drop(pending);
        self.wake.notify_one();
    }

    fn forget(&self, tags: &[Arc<str>]) {
        lock(&self.pending).retain(|p| !tags.iter().any(|t| Arc::ptr_eq(p, t)));
    }
}

/// Why a subscribe was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeError {
    /// The connection would track more than the limit.
    TooManyTags,
}

/// The connections tracking one tag.
type Subscribers = Vec<(ConnId, Arc<Outbox>)>;

/// The index, shared by every connection task and HTTP handler.
#[derive(Debug, Default)]
pub struct Hub {
    /// Tag → the connections tracking it. Keys are interned: sessions and outboxes hold
    /// clones of the same `Arc`, so a tag's bytes are stored once.
    index: Mutex<HashMap<Arc<str>, Subscribers>>,
    next_id: AtomicU64,
}

impl Hub {
    /// A fresh connection id.
    pub fn next_id(&self) -> ConnId {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Makes `tags` routable to connection `id`, adding them to `tracked`; all or none.
    /// Returns once routable, so the caller may send the ack.
    pub fn subscribe(
        &self,
        id: ConnId,
        outbox: &Arc<Outbox>,
        tracked: &mut Vec<Arc<str>>,
        tags: &[&str],
        max_tags: usize,
    ) -> Result<(), SubscribeError> {
        let mut fresh: Vec<&str> = Vec::new();
        for &tag in tags {
            if !tracked.iter().any(|t| **t == *tag) && !fresh.contains(&tag) {
                fresh.push(tag);
            }
        }
        if tracked.len() + fresh.len() > max_tags {
            return Err(SubscribeError::TooManyTags);
        }

        let mut index = lock(&self.index);
        for tag in fresh {
            let key = match index.get_key_value(tag) {
                Some((key, _)) => Arc::clone(key),
                None => Arc::from(tag),
            };
            index
                .entry(Arc::clone(&key))
                .or_default()
                .push((id, Arc::clone(outbox)));
            tracked.push(key);
        }
        Ok(())
    }

    /// Stops routing `tags` to connection `id` and drops them from its outbox, so that
    /// nothing about them is sent after the ack.
    pub fn unsubscribe(
        &self,
        id: ConnId,
        outbox: &Outbox,
        tracked: &mut Vec<Arc<str>>,
        tags: &[&str],
    ) {
        let mut gone = Vec::new();
        tracked.retain(|t| {
            let keep = !tags.contains(&&**t);
            if !keep {
                gone.push(Arc::clone(t));
            }
            keep
        });
        self.remove(id, &gone);
        outbox.forget(&gone);
    }

    /// Removes connection `id` from the index entries of `tags` (its tracked tags), when it
    /// unsubscribes or closes.
    pub fn remove(&self, id: ConnId, tags: &[Arc<str>]) {
        let mut index = lock(&self.index);
        for tag in tags {
            if let Some(subscribers) = index.get_mut(tag) {
                if let Some(at) = subscribers.iter().position(|(c, _)| *c == id) {
                    subscribers.swap_remove(at);
                }
                if subscribers.is_empty() {
                    index.remove(tag);
                }
            }
        }
    }

    /// Routes one change: every connection tracking one of `tags`, except those of
    /// `author`, gets the tags it tracks added to its outbox and is woken.
    pub fn publish(&self, author: Option<&str>, tags: &[&str]) {
        let is_author = |outbox: &Outbox| author.is_some() && outbox.user.as_deref() == author;
        let index = lock(&self.index);

        // One tag (the usual change): each subscriber gets exactly that tag, so it can be
        // added in place. Outbox locks nest inside the index lock here and nowhere the
        // other way round.
        if let [tag] = tags {
            if let Some((key, subscribers)) = index.get_key_value(*tag) {
                for (_, outbox) in subscribers.iter().filter(|(_, o)| !is_author(o)) {
                    outbox.add(std::slice::from_ref(key));
                }
            }
            return;
        }

        // Several tags: gather each connection's share first, so that one change makes one
        // frame even when the session wakes up between two of its tags.
        let mut batch: HashMap<ConnId, (&Arc<Outbox>, Vec<Arc<str>>)> = HashMap::new();
        for &tag in tags {
            let Some((key, subscribers)) = index.get_key_value(tag) else {
                continue;
            };
            for (id, outbox) in subscribers.iter().filter(|(_, o)| !is_author(o)) {
                let (_, tags) = batch.entry(*id).or_insert_with(|| (outbox, Vec::new()));
                if !tags.iter().any(|t| Arc::ptr_eq(t, key)) {
                    tags.push(Arc::clone(key));
                }
            }
        }
        for (outbox, tags) in batch.into_values() {
            outbox.add(&tags);
        }
    }
}

/// Locks a mutex whose holders never panic while holding it (they only move `Arc`s
/// around); a poisoned lock still holds consistent data.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
