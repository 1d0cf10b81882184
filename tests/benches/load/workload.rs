//! The workload: which user each connection belongs to, which tags it tracks and what is
//! published, all drawn from one seed so that the floor and tagcast face the same load.
//!
//! Everything is an index here (user `u`, tag `t`, connection `c`); names are made only
//! where they go on the wire, so the analysis can work on small integers.

use std::time::Duration;

use anyhow::{bail, Result};

/// The protocol's default `limits.max_tags_per_connection`: a shape asking for more would
/// measure error frames, not routing.
const MAX_TAGS_PER_CONNECTION: u32 = 1_000;

/// The numbers a scenario is made of.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    /// WebSocket connections opened by the load tool.
    pub connections: u32,
    /// Connections of one user (tabs); users = ceil(connections / this).
    pub conns_per_user: u32,
    /// Tags each connection subscribes to, distinct, drawn from the pool.
    pub tags_per_conn: u32,
    /// Size of the tag pool.
    pub tag_pool: u32,
    /// Publishes per second; 0 means no publish phase.
    pub rate: u32,
    /// Length of the publish phase.
    pub duration: Duration,
    /// Distinct tags in each publish.
    pub tags_per_publish: u32,
    /// HTTP keep-alive connections the publishes are spread over.
    pub publishers: u32,
    /// Seed of every random draw.
    pub seed: u64,
}

impl Shape {
    /// Number of users the connections are spread over.
    pub fn users(&self) -> u32 {
        self.connections.div_ceil(self.conns_per_user)
    }

    /// Number of publishes in the publish phase.
    pub fn publish_count(&self) -> usize {
        // Whole milliseconds are plenty for a rate in publishes per second.
        let millis = u64::try_from(self.duration.as_millis()).unwrap_or(u64::MAX);
        usize::try_from(u64::from(self.rate).saturating_mul(millis) / 1_000).unwrap_or(usize::MAX)
    }

    /// Rejects shapes the protocol or the draw cannot honour, saying which option to change.
    pub fn validate(&self) -> Result<()> {
        if self.connections == 0 {
            bail!("--connections must be at least 1");
        }
        if self.conns_per_user == 0 {
            bail!("--conns-per-user must be at least 1");
        }
        if self.tag_pool == 0 {
            bail!("--tag-pool must be at least 1");
        }
        if self.tags_per_conn == 0 || self.tags_per_conn > self.tag_pool {
            bail!(
                "--tags-per-conn is {} but must be between 1 and --tag-pool ({})",
                self.tags_per_conn,
                self.tag_pool
            );
        }
        if self.tags_per_conn > MAX_TAGS_PER_CONNECTION {
            bail!(
                "--tags-per-conn is {} but the protocol's default limit is {MAX_TAGS_PER_CONNECTION}",
                self.tags_per_conn
            );
        }
        if self.rate > 0 {
            if self.tags_per_publish == 0 || self.tags_per_publish > self.tag_pool {
                bail!(
                    "--tags-per-publish is {} but must be between 1 and --tag-pool ({})",
                    self.tags_per_publish,
                    self.tag_pool
                );
            }
            if self.publishers == 0 {
                bail!("--publishers must be at least 1");
            }
            if self.duration.is_zero() {
                bail!("--duration must be above 0 when --rate is above 0");
            }
        }
        Ok(())
    }
}

/// One publish of the publish phase.
#[derive(Debug, Clone, PartialEq)]
pub struct Publish {
    /// The author user: none of its connections may be told.
    pub author: u32,
    /// Distinct tag indices.
    pub tags: Vec<u32>,
}

/// The drawn workload, shared read-only by the clients, the publishers and the analysis.
#[derive(Debug)]
pub struct Workload {
    /// The numbers it was drawn from.
    pub shape: Shape,
    /// Tag names by index.
    pub tag_names: Vec<String>,
    /// The user of each connection.
    pub conn_user: Vec<u32>,
    /// The tags each connection subscribes to, in the order of its subscribe frame.
    pub subscriptions: Vec<Vec<u32>>,
    /// For each tag, the connections that track it, ascending.
    pub subscribers: Vec<Vec<u32>>,
    /// The publishes, in schedule order.
    pub publishes: Vec<Publish>,
}

impl Workload {
    /// Draws the workload of `shape`; the same shape always gives the same workload.
    pub fn draw(shape: Shape) -> Workload {
        let mut rng = Rng::new(shape.seed);

        // Names about as long as the entity tags Oro makes (`App_Entity_Task_42`), since the
        // bytes of a tag are part of what the server stores per subscription.
        let tag_names = (0..shape.tag_pool)
            .map(|t| format!("App_Entity_Load_{t}"))
            .collect();

        // Consecutive connections share a user, as the tabs of one browser would.
        let conn_user = (0..shape.connections)
            .map(|c| c / shape.conns_per_user)
            .collect();

        let subscriptions: Vec<Vec<u32>> = (0..shape.connections)
            .map(|_| rng.distinct(shape.tags_per_conn, shape.tag_pool))
            .collect();
        let mut subscribers = vec![Vec::new(); to_index(shape.tag_pool)];
        for (c, tags) in subscriptions.iter().enumerate() {
            for &t in tags {
                subscribers[to_index(t)].push(to_u32(c));
            }
        }

        let publishes = (0..shape.publish_count())
            .map(|_| Publish {
                author: rng.below(shape.users()),
                tags: rng.distinct(shape.tags_per_publish, shape.tag_pool),
            })
            .collect();

        Workload {
            shape,
            tag_names,
            conn_user,
            subscriptions,
            subscribers,
            publishes,
        }
    }

    /// The wire name of user `u`.
    pub fn user_name(u: u32) -> String {
        format!("user{u}")
    }
}

/// Widens a `u32` index; every target this tool runs on has at least 32-bit `usize`.
pub fn to_index(i: u32) -> usize {
    usize::try_from(i).unwrap_or(usize::MAX)
}

/// Narrows an index that came from a `u32`-sized collection (connections, tags).
pub fn to_u32(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

/// SplitMix64: tiny and well mixed. Written out rather than taken from a crate so that a
/// seed names the same workload whatever versions the lock file moves to.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator started at `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` above 0), by multiply-shift: the bias is below 2^-32.
    pub fn below(&mut self, n: u32) -> u32 {
        let high = self.next_u64() >> 32;
        // The product of two values below 2^32 shifted right by 32 is below n.
        to_u32_trunc((high * u64::from(n)) >> 32)
    }

    /// `k` distinct numbers of `0..n` (`k <= n`) by Floyd's algorithm: `k` draws whatever
    /// `n` is, so drawing 5 tags of a pool of a million costs 5 draws.
    pub fn distinct(&mut self, k: u32, n: u32) -> Vec<u32> {
        let mut picked: Vec<u32> = Vec::with_capacity(to_index(k));
        for j in (n - k)..n {
            let t = self.below(j + 1);
            picked.push(if picked.contains(&t) { j } else { t });
        }
        picked
    }
}

/// Keeps the low 32 bits of a value known to fit.
fn to_u32_trunc(v: u64) -> u32 {
    u32::try_from(v & u64::from(u32::MAX)).unwrap_or(u32::MAX)
}
