//! The hub routes published tags to the connections that track them.
//!
//! State and owners:
//! - the index (tag → subscribed connections) is owned by the [`Hub`] behind one `RwLock`:
//!   publishes read it, subscribe/unsubscribe/unregister write it;
//! - each connection's [`Mailbox`] (what it still has to receive) is written by publishers
//!   and drained by that connection's own task;
//! - the user table interns user ids (so that "not to the author" is a pointer compare) and
//!   counts each user's connections;
//! - the live table holds every open connection, so that the heartbeat and shutdown can
//!   signal each one.
//!
//! Waking a connection: each [`Conn`] has signal bits (mail, heartbeat tick, stop) and one
//! waker. Publishers, the heartbeat and shutdown set a bit and wake it; its task awaits
//! [`Conn::signalled`], a future of one pointer. Every connection pays for the size of its
//! task's future, so no channel receiver or `Notified` future is kept per connection.
//!
//! Ordering guarantees, relied on by the protocol's acks:
//! - subscribe inserts into the index before the connection task sends `subscribed`, and a
//!   publish delivers while holding the read lock: any publish that starts after the ack
//!   was written sees the subscription;
//! - unsubscribe removes from the index under the write lock (so no publish is mid-delivery
//!   to this connection) and then strips the tags from the mailbox, before `unsubscribed`.
//!
//! Coalescing: what a connection still has to receive is a set of tags, not a queue. The
//! first change waiting for a connection is kept as the frame serialized for it (shared by
//! every connection that tracks the same subset of that change's tags); a second change
//! arriving before the connection task drained the first merges both into a tag set. So a
//! connection's memory is bounded by its subscriptions, however slowly it reads.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::task::AtomicWaker;
use serde::Serialize;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::identity::Identity;

/// A tag, shared between the index and the connections that track it.
pub type Tag = Arc<str>;

/// An interned user id: two connections of one user hold the same `Arc`.
pub type UserId = Arc<str>;

/// One WebSocket connection, as the hub and publishers see it. Owned by an `Arc` shared by
/// the index entries of its tags and by its connection task; dropped when both are done.
pub struct Conn {
    /// Key in the hub's live table.
    id: u64,
    /// The connection's user, interned; `None` for anonymous connections.
    user: Option<UserId>,
    /// What the connection still has to receive; see the module docs.
    mailbox: Mutex<Mailbox>,
    /// Why the task was woken: [`Signals`] bits, taken by [`Conn::signalled`].
    signals: AtomicU8,
    /// The connection task's waker.
    waker: AtomicWaker,
}

/// Why a connection task was woken.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Signals(u8);

impl Signals {
    /// The mailbox went from empty to non-empty.
    pub const MAIL: Signals = Signals(1);
    /// A heartbeat tick: ping, and check for idleness.
    pub const TICK: Signals = Signals(2);
    /// The server is shutting down.
    pub const STOP: Signals = Signals(4);

    /// The bits set in both.
    pub fn and(self, other: Signals) -> Signals {
        Signals(self.0 & other.0)
    }

    /// Whether every bit of `other` is set.
    pub fn contains(self, other: Signals) -> bool {
        self.0 & other.0 == other.0
    }
}

/// What a connection still has to receive.
#[derive(Default)]
pub enum Mailbox {
    /// Nothing.
    #[default]
    Empty,
    /// One change's frame, serialized once and shared.
    Frame(Frame, Instant),
    /// Several changes merged: the union of their tags, serialized when sent. The instant is
    /// the arrival of the oldest change merged in.
    Tags(Vec<Tag>, Instant),
}

/// An `outdated` frame, serialized once, with the tags it lists.
#[derive(Clone)]
pub struct Frame {
    /// The JSON text, shared by every connection it is sent to.
    pub text: Utf8Bytes,
    /// The tags in `text`, for merging.
    pub tags: Arc<[Tag]>,
}

/// Why a connection was refused.
#[derive(Debug, thiserror::Error)]
pub enum Rejected {
    /// The server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The user has as many connections open as allowed.
    #[error("user `{user}` already has {limit} connections open; close one first")]
    TooManyConnections {
        /// The user.
        user: String,
        /// The configured limit.
        limit: usize,
    },
}

/// Counters the hub maintains, read by `/metrics`.
#[derive(Default)]
pub struct HubStats {
    /// Open connections.
    pub connections: AtomicI64,
    /// (connection, tag) subscriptions.
    pub subscriptions: AtomicI64,
    /// Changes published.
    pub changes: AtomicU64,
    /// Tags published, counted per change.
    pub tags_published: AtomicU64,
}

/// The routing index and the user table. One per server, shared by every task.
pub struct Hub {
    /// Tag → connections that track it. Each connection appears once per tag.
    index: RwLock<HashMap<Tag, Vec<Arc<Conn>>>>,
    /// Every open connection by id, for the heartbeat and shutdown.
    live: Mutex<HashMap<u64, Arc<Conn>>>,
    /// Hands out connection ids.
    next_id: AtomicU64,
    /// Set once shutdown began: no new connection is admitted after it.
    stopping: AtomicBool,
    /// User id → (interned id, open connections).
    users: Mutex<HashMap<UserId, usize>>,
    /// The per-user connection limit.
    max_connections_per_user: usize,
    /// Counters for `/metrics`.
    pub stats: HubStats,
}

/// The most tags of one change routed as one frame: connections are matched against a
/// change's tags with a 64-bit mask.
const MASK_BITS: usize = 64;

impl Hub {
    /// An empty hub.
    pub fn new(max_connections_per_user: usize) -> Hub {
        Hub {
            index: RwLock::new(HashMap::new()),
            live: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            users: Mutex::new(HashMap::new()),
            max_connections_per_user,
            stats: HubStats::default(),
        }
    }

    /// Admits a connection for `identity`, counting it against its user's limit.
    pub fn register(&self, identity: &Identity) -> Result<Arc<Conn>, Rejected> {
        // Checked again under the live table's lock below; this early check only saves
        // touching the user table.
        if self.stopping.load(Ordering::SeqCst) {
            return Err(Rejected::ShuttingDown);
        }
        let user = match identity.user_id() {
            None => None,
            Some(name) => {
                let mut users = lock(&self.users);
                let interned = match users.get_key_value(name) {
                    Some((k, &count)) if count >= self.max_connections_per_user => {
                        return Err(Rejected::TooManyConnections {
                            user: k.to_string(),
                            limit: self.max_connections_per_user,
                        })
                    }
                    Some((k, _)) => k.clone(),
                    None => Arc::from(name),
                };
                *users.entry(interned.clone()).or_insert(0) += 1;
                Some(interned)
            }
        };
        let conn = Arc::new(Conn {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            user,
            mailbox: Mutex::new(Mailbox::Empty),
            signals: AtomicU8::new(0),
            waker: AtomicWaker::new(),
        });
        {
            // stop_all sets `stopping` and then walks this table under its lock, so a
            // connection either sees the flag here or is in the table for the walk.
            let mut live = lock(&self.live);
            if self.stopping.load(Ordering::SeqCst) {
                drop(live);
                self.release_user(&conn);
                return Err(Rejected::ShuttingDown);
            }
            live.insert(conn.id, conn.clone());
        }
        self.stats.connections.fetch_add(1, Ordering::Relaxed);
        Ok(conn)
    }

    /// Signals a heartbeat tick to every open connection.
    pub fn tick_all(&self) {
        for conn in lock(&self.live).values() {
            conn.signal(Signals::TICK);
        }
    }

    /// Tells every open connection to close, and refuses new ones from now on.
    pub fn stop_all(&self) {
        let live = lock(&self.live);
        self.stopping.store(true, Ordering::SeqCst);
        for conn in live.values() {
            conn.signal(Signals::STOP);
        }
    }

    fn release_user(&self, conn: &Conn) {
        if let Some(user) = &conn.user {
            let mut users = lock(&self.users);
            if let Entry::Occupied(mut e) = users.entry(user.clone()) {
                *e.get_mut() -= 1;
                if *e.get() == 0 {
                    e.remove();
                }
            }
        }
    }

    /// Removes a closed connection from every tag it tracked and from its user's count.
    pub fn unregister(&self, conn: &Arc<Conn>, tracked: &mut Vec<Tag>) {
        let tags = tracked.clone();
        self.unsubscribe(conn, &tags, tracked);
        lock(&self.live).remove(&conn.id);
        self.release_user(conn);
        self.stats.connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// Makes `tags` routable to `conn`; `tracked` is the connection's own list of its tags,
    /// kept by its task. Tags already tracked are skipped.
    pub fn subscribe(&self, conn: &Arc<Conn>, tags: &[&str], tracked: &mut Vec<Tag>) {
        let mut index = write(&self.index);
        let mut added = 0;
        for &tag in tags {
            if tracked.iter().any(|t| &**t == tag) {
                continue;
            }
            let key = match index.get_key_value(tag) {
                Some((k, _)) => k.clone(),
                None => Tag::from(tag),
            };
            index.entry(key.clone()).or_default().push(conn.clone());
            tracked.push(key);
            added += 1;
        }
        self.stats.subscriptions.fetch_add(added, Ordering::Relaxed);
    }

    /// Stops routing `tags` to `conn` and forgets them from what it still has to receive.
    pub fn unsubscribe<S: AsRef<str>>(&self, conn: &Arc<Conn>, tags: &[S], tracked: &mut Vec<Tag>) {
        let mut removed: Vec<Tag> = Vec::new();
        {
            let mut index = write(&self.index);
            for tag in tags {
                let tag = tag.as_ref();
                let Some(pos) = tracked.iter().position(|t| &**t == tag) else {
                    continue;
                };
                let key = tracked.swap_remove(pos);
                if let Entry::Occupied(mut entry) = index.entry(key.clone()) {
                    let conns = entry.get_mut();
                    if let Some(i) = conns.iter().position(|c| Arc::ptr_eq(c, conn)) {
                        conns.swap_remove(i);
                    }
                    if conns.is_empty() {
                        entry.remove();
                    }
                }
                removed.push(key);
            }
        }
        if removed.is_empty() {
            return;
        }
        self.stats
            .subscriptions
            .fetch_sub(removed.len() as i64, Ordering::Relaxed);
        conn.forget(&removed);
    }

    /// The number of distinct tags tracked by at least one connection.
    pub fn distinct_tags(&self) -> usize {
        read(&self.index).len()
    }

    /// Delivers one change: every connection tracking any of `tags`, except the author's
    /// connections, gets one frame listing the change's tags it tracks. Returns the number
    /// of connections notified.
    pub fn publish<S: AsRef<str>>(
        &self,
        author: Option<&str>,
        tags: &[S],
        arrived: Instant,
    ) -> usize {
        self.stats.changes.fetch_add(1, Ordering::Relaxed);
        self.stats
            .tags_published
            .fetch_add(tags.len() as u64, Ordering::Relaxed);

        // The author's interned id, if they have any connection; a user with none has no
        // connection to skip.
        let author: Option<UserId> =
            author.and_then(|a| lock(&self.users).get_key_value(a).map(|(k, _)| k.clone()));
        let is_author = |conn: &Conn| match (&author, &conn.user) {
            (Some(a), Some(u)) => Arc::ptr_eq(a, u),
            _ => false,
        };

        let index = read(&self.index);
        let mut routable: Vec<(&Tag, &Vec<Arc<Conn>>)> = Vec::with_capacity(tags.len());
        for tag in tags {
            if let Some((key, conns)) = index.get_key_value(tag.as_ref()) {
                if !routable.iter().any(|(k, _)| Arc::ptr_eq(k, key)) {
                    routable.push((key, conns));
                }
            }
        }

        let mut notified = 0;
        for group in routable.chunks(MASK_BITS) {
            notified += deliver_group(group, &is_author, arrived);
        }
        notified
    }
}

/// Routes one group of at most 64 of a change's tags. Connections are keyed by the mask of
/// the group's tags they track; each distinct mask's frame is serialized once.
fn deliver_group(
    group: &[(&Tag, &Vec<Arc<Conn>>)],
    is_author: &dyn Fn(&Conn) -> bool,
    arrived: Instant,
) -> usize {
    // The common case, one tag: every subscriber gets the same frame.
    if let [(tag, conns)] = group {
        let frame = Frame::new(Arc::from([(*tag).clone()]));
        let mut notified = 0;
        for conn in conns.iter().filter(|c| !is_author(c)) {
            conn.deliver(&frame, arrived);
            notified += 1;
        }
        return notified;
    }

    let mut masks: HashMap<*const Conn, (&Arc<Conn>, u64)> = HashMap::new();
    for (bit, (_, conns)) in group.iter().enumerate() {
        for conn in conns.iter() {
            masks.entry(Arc::as_ptr(conn)).or_insert((conn, 0)).1 |= 1 << bit;
        }
    }
    let mut frames: HashMap<u64, Frame> = HashMap::new();
    let mut notified = 0;
    for (conn, mask) in masks.into_values() {
        if is_author(conn) {
            continue;
        }
        let frame = frames.entry(mask).or_insert_with(|| {
            let tags: Arc<[Tag]> = group
                .iter()
                .enumerate()
                .filter(|(bit, _)| mask & (1 << bit) != 0)
                .map(|(_, (tag, _))| (*tag).clone())
                .collect();
            Frame::new(tags)
        });
        conn.deliver(frame, arrived);
        notified += 1;
    }
    notified
}

#[derive(Serialize)]
struct OutdatedFrame<'a, T: AsRef<str>> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(serialize_with = "serialize_tags")]
    tags: &'a [T],
}

fn serialize_tags<S: serde::Serializer, T: AsRef<str>>(
    tags: &&[T],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(tags.iter().map(AsRef::as_ref))
}

/// The JSON text of an `outdated` frame listing `tags`.
pub fn outdated_json<T: AsRef<str>>(tags: &[T]) -> String {
    let frame = OutdatedFrame {
        kind: "outdated",
        tags,
    };
    // Serializing strings into a String cannot fail.
    serde_json::to_string(&frame).expect("an outdated frame serializes")
}

impl Frame {
    fn new(tags: Arc<[Tag]>) -> Frame {
        Frame {
            text: Utf8Bytes::from(outdated_json(&tags)),
            tags,
        }
    }
}

impl Conn {
    /// The connection's user, if any.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// Waits until the connection is signalled, and takes the signals.
    pub fn signalled(&self) -> Signalled<'_> {
        Signalled(self)
    }

    /// Puts signals back, without waking the task: for a task that took them while busy
    /// and will poll [`Conn::signalled`] again.
    pub fn keep(&self, signals: Signals) {
        if signals.0 != 0 {
            self.signals.fetch_or(signals.0, Ordering::SeqCst);
        }
    }

    fn signal(&self, signals: Signals) {
        self.signals.fetch_or(signals.0, Ordering::SeqCst);
        self.waker.wake();
    }

    /// Takes what the connection has to receive, leaving the mailbox empty.
    pub fn take(&self) -> Mailbox {
        std::mem::take(&mut *lock(&self.mailbox))
    }

    fn deliver(&self, frame: &Frame, arrived: Instant) {
        let mut mailbox = lock(&self.mailbox);
        match &mut *mailbox {
            Mailbox::Empty => {
                *mailbox = Mailbox::Frame(frame.clone(), arrived);
                drop(mailbox);
                // The bit stays set until the task takes it, so a delivery made while the
                // task is busy sending is not lost.
                self.signal(Signals::MAIL);
            }
            Mailbox::Frame(pending, since) => {
                let mut tags = pending.tags.to_vec();
                merge(&mut tags, &frame.tags);
                *mailbox = Mailbox::Tags(tags, *since);
            }
            Mailbox::Tags(tags, _) => merge(tags, &frame.tags),
        }
    }

    /// Removes `tags` from what the connection still has to receive.
    fn forget(&self, tags: &[Tag]) {
        let mut mailbox = lock(&self.mailbox);
        let (mut remaining, since) = match &*mailbox {
            Mailbox::Empty => return,
            Mailbox::Frame(frame, since) => {
                if !frame.tags.iter().any(|t| tags.contains(t)) {
                    return;
                }
                (frame.tags.to_vec(), *since)
            }
            Mailbox::Tags(pending, since) => (pending.clone(), *since),
        };
        remaining.retain(|t| !tags.contains(t));
        *mailbox = if remaining.is_empty() {
            Mailbox::Empty
        } else {
            Mailbox::Tags(remaining, since)
        };
    }
}

/// The future of [`Conn::signalled`]: one pointer, for the connection task's select loop.
pub struct Signalled<'a>(&'a Conn);

impl Future for Signalled<'_> {
    type Output = Signals;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Signals> {
        let conn = self.0;
        // Register before taking, so that a signal set in between wakes this task.
        conn.waker.register(cx.waker());
        match conn.signals.swap(0, Ordering::SeqCst) {
            0 => Poll::Pending,
            bits => Poll::Ready(Signals(bits)),
        }
    }
}

/// Adds the tags of `more` missing from `tags`. Both are bounded by the connection's
/// subscriptions, which are few; a linear scan is cheaper than hashing at that size.
fn merge(tags: &mut Vec<Tag>, more: &[Tag]) {
    for tag in more {
        if !tags.iter().any(|t| Arc::ptr_eq(t, tag) || t == tag) {
            tags.push(tag.clone());
        }
    }
}

// Poisoning: no code path panics while holding these locks (no user code runs under them),
// and the data stays consistent if one did, so a poisoned lock is recovered.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags_of(mailbox: Mailbox) -> Vec<String> {
        match mailbox {
            Mailbox::Empty => vec![],
            Mailbox::Frame(f, _) => f.tags.iter().map(|t| t.to_string()).collect(),
            Mailbox::Tags(t, _) => t.iter().map(|t| t.to_string()).collect(),
        }
    }

    fn user(name: &str) -> Identity {
        Identity::user(name)
    }

    #[test]
    fn change_reaches_subscribers_but_not_the_author() {
        let hub = Hub::new(10);
        let (alice, bob) = (
            hub.register(&user("alice")).unwrap(),
            hub.register(&user("bob")).unwrap(),
        );
        let (mut a, mut b) = (vec![], vec![]);
        hub.subscribe(&alice, &["t"], &mut a);
        hub.subscribe(&bob, &["t"], &mut b);
        assert_eq!(hub.publish(Some("alice"), &["t"], Instant::now()), 1);
        assert_eq!(tags_of(bob.take()), ["t"]);
        assert!(matches!(alice.take(), Mailbox::Empty));
    }

    #[test]
    fn one_frame_lists_every_tracked_tag_of_a_change() {
        let hub = Hub::new(10);
        let c = hub.register(&Identity::anonymous()).unwrap();
        let mut tracked = vec![];
        hub.subscribe(&c, &["a", "b", "c"], &mut tracked);
        hub.publish(None, &["b", "x", "a", "b"], Instant::now());
        let Mailbox::Frame(frame, _) = c.take() else {
            panic!("expected one frame")
        };
        assert_eq!(&*frame.text, r#"{"type":"outdated","tags":["b","a"]}"#);
    }

    #[test]
    fn connections_tracking_the_same_tags_share_one_serialized_frame() {
        let hub = Hub::new(10);
        let conns: Vec<_> = (0..3)
            .map(|_| hub.register(&Identity::anonymous()).unwrap())
            .collect();
        for c in &conns {
            hub.subscribe(c, &["a", "b"], &mut vec![]);
        }
        hub.publish(None, &["a", "b"], Instant::now());
        let texts: Vec<Utf8Bytes> = conns
            .iter()
            .map(|c| match c.take() {
                Mailbox::Frame(f, _) => f.text,
                _ => panic!("expected a frame"),
            })
            .collect();
        assert!(texts.windows(2).all(|w| w[0].as_ptr() == w[1].as_ptr()));
    }

    #[test]
    fn pending_changes_merge_into_a_bounded_tag_set() {
        let hub = Hub::new(10);
        let c = hub.register(&Identity::anonymous()).unwrap();
        hub.subscribe(&c, &["a", "b"], &mut vec![]);
        for i in 0..10_000 {
            hub.publish(None, &[if i % 2 == 0 { "a" } else { "b" }], Instant::now());
        }
        let mut tags = tags_of(c.take());
        tags.sort();
        assert_eq!(tags, ["a", "b"]);
    }

    #[test]
    fn unsubscribe_stops_delivery_and_strips_pending_tags() {
        let hub = Hub::new(10);
        let c = hub.register(&Identity::anonymous()).unwrap();
        let mut tracked = vec![];
        hub.subscribe(&c, &["a", "b"], &mut tracked);
        hub.publish(None, &["a", "b"], Instant::now());
        hub.unsubscribe(&c, &["a"], &mut tracked);
        assert_eq!(tags_of(c.take()), ["b"]);
        hub.publish(None, &["a"], Instant::now());
        assert!(matches!(c.take(), Mailbox::Empty));
        assert_eq!(hub.distinct_tags(), 1);
    }

    #[test]
    fn unregister_removes_every_subscription() {
        let hub = Hub::new(10);
        let (a, b) = (
            hub.register(&user("a")).unwrap(),
            hub.register(&user("b")).unwrap(),
        );
        let (mut ta, mut tb) = (vec![], vec![]);
        hub.subscribe(&a, &["x", "y"], &mut ta);
        hub.subscribe(&b, &["y"], &mut tb);
        hub.unregister(&a, &mut ta);
        assert!(ta.is_empty());
        assert_eq!(hub.distinct_tags(), 1);
        assert_eq!(hub.stats.subscriptions.load(Ordering::Relaxed), 1);
        assert_eq!(hub.stats.connections.load(Ordering::Relaxed), 1);
        assert_eq!(hub.publish(None, &["x", "y"], Instant::now()), 1);
        assert_eq!(
            Arc::strong_count(&a),
            1,
            "the index keeps no reference to a closed connection"
        );
    }

    #[test]
    fn stop_reaches_open_connections_and_refuses_new_ones() {
        let hub = Hub::new(10);
        let conn = hub.register(&user("a")).unwrap();
        hub.tick_all();
        hub.stop_all();
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let Poll::Ready(signals) = Pin::new(&mut conn.signalled()).poll(&mut cx) else {
            panic!("the connection was signalled")
        };
        assert!(signals.contains(Signals::TICK) && signals.contains(Signals::STOP));
        assert!(Pin::new(&mut conn.signalled()).poll(&mut cx).is_pending());
        assert!(matches!(
            hub.register(&user("b")),
            Err(Rejected::ShuttingDown)
        ));
        hub.unregister(&conn, &mut vec![]);
        assert_eq!(hub.stats.connections.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn per_user_connection_limit_is_enforced_and_released() {
        let hub = Hub::new(2);
        let first = hub.register(&user("u")).unwrap();
        let _second = hub.register(&user("u")).unwrap();
        assert!(hub.register(&user("u")).is_err());
        hub.unregister(&first, &mut vec![]);
        assert!(hub.register(&user("u")).is_ok());
        assert!(
            hub.register(&Identity::anonymous()).is_ok(),
            "anonymous is not limited"
        );
    }

    #[test]
    fn changes_with_more_than_64_tags_still_reach_every_tag() {
        let hub = Hub::new(10);
        let c = hub.register(&Identity::anonymous()).unwrap();
        let names: Vec<String> = (0..100).map(|i| format!("t{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        hub.subscribe(&c, &refs, &mut vec![]);
        hub.publish(None, &names, Instant::now());
        assert_eq!(tags_of(c.take()).len(), 100);
    }
}
