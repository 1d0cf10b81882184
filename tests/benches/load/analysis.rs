//! After the run: which publish each received `outdated` frame delivered, hence latency,
//! missing and unexpected deliveries.
//!
//! Frames carry tags only, so deliveries are matched by tags and time. For each connection
//! the expected deliveries are computed from the workload: every publish that was answered
//! 200, touching a tag the connection tracks, by an author other than the connection's
//! user, with its relevant tags (publish tags ∩ tracked tags). Then, per connection:
//!
//! 1. Frames are taken from the last to the first. Each takes the newest publish written
//!    before the frame arrived, not yet taken, whose relevant tags it lists, then more
//!    while it lists tags no taken publish explains (a merge of different tags).
//! 2. A publish left over (more changes than frames: the server merged changes of the
//!    same tags, as the protocol allows when a reader lags) is delivered by the first frame
//!    that arrived after it was written and lists its tags. Frames that delivered several
//!    changes are merged frames.
//! 3. A frame with tags that no publish explains is unexpected: a duplicate, an author
//!    told of its own change, a tag not tracked, a frame listing part of a change's tags.
//! 4. A publish that no frame covers is missing.
//!
//! Why backwards: frames say nothing about which change caused them, and when a frame is
//! still in flight as the next change of its tags is written, "oldest first" reads a later
//! merge as a shift of every credit by one change (latencies of a whole publish gap), and
//! "everything written before the frame" reads a connection that lags behind by a few
//! changes as one merge followed by instant deliveries. Matching from the end is anchored
//! by the last frames, pairs frames and changes one to one wherever their counts allow, and
//! puts merges where the arrival times force them. What stays ambiguous is a merge inside a
//! stretch where a connection lags: credits there may move by one change.
//!
//! Latency is frame arrival minus the instant the publish request was written.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::clients::{ClientLog, Frame};
use crate::workload::{to_index, to_u32, Workload};

/// Examples of each kind of trouble kept for the report.
const KEPT_EXAMPLES: usize = 3;

/// The counts and latencies of one run's publish phase.
#[derive(Debug, Default)]
pub struct Outcome {
    /// (connection, publish) pairs that should be told.
    pub expected: u64,
    /// Pairs delivered by a frame of their own.
    pub delivered_own: u64,
    /// Pairs delivered by a frame that delivered other changes too (rule 2, or a merge of
    /// different tags).
    pub delivered_merged: u64,
    /// Pairs never delivered.
    pub missing: u64,
    /// Frames not explained by any pending publish.
    pub unexpected_frames: u64,
    /// Text frames received after the acks.
    pub frames: u64,
    /// Publish-to-receipt latency of every delivered pair, ascending.
    pub latencies: Vec<Duration>,
    /// First publish written to last delivery, the window deliveries per second uses.
    pub window: Duration,
    /// A few missing pairs and unexpected frames, for diagnosis.
    pub examples: Vec<String>,
}

impl Outcome {
    /// All delivered pairs.
    pub fn delivered(&self) -> u64 {
        self.delivered_own + self.delivered_merged
    }

    /// Delivered pairs per second of the delivery window.
    pub fn deliveries_per_sec(&self) -> f64 {
        let secs = self.window.as_secs_f64();
        if secs > 0.0 {
            self.delivered() as f64 / secs
        } else {
            0.0
        }
    }

    /// The nearest-rank percentile `p` (0 to 100) of the latencies.
    pub fn latency_percentile(&self, p: f64) -> Option<Duration> {
        let n = self.latencies.len();
        if n == 0 {
            return None;
        }
        // Nearest rank: the smallest value with at least p% of the values at or below it.
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        Some(self.latencies[rank.clamp(1, n) - 1])
    }
}

/// A delivery a connection should get.
#[derive(Debug, Clone)]
struct Expected {
    publish: usize,
    sent: Instant,
    /// Relevant tags, ascending.
    tags: Vec<u32>,
}

/// A received frame, reduced to what matching needs.
#[derive(Debug, Clone)]
struct Received {
    at: Instant,
    /// Ascending tag indices, or `None` when the frame is not an `outdated` frame of known
    /// tags (any such frame is unexpected).
    tags: Option<Vec<u32>>,
}

/// What matching one connection found.
#[derive(Debug, Default)]
struct ConnectionOutcome {
    delivered_own: u64,
    delivered_merged: u64,
    missing: Vec<usize>,
    unexpected: Vec<usize>,
    latencies: Vec<Duration>,
    last_delivery: Option<Instant>,
}

/// Matches the frames every connection received against the publishes the server
/// answered; `sent[i]` is when publish `i` was written, `None` if it failed.
pub fn analyse(workload: &Workload, sent: &[Option<Instant>], logs: &[ClientLog]) -> Outcome {
    let expected = expected_deliveries(workload, sent);
    let by_name: HashMap<&str, u32> = workload
        .tag_names
        .iter()
        .enumerate()
        .map(|(t, name)| (name.as_str(), to_u32(t)))
        .collect();

    let mut outcome = Outcome::default();
    let mut last_delivery: Option<Instant> = None;
    for (c, (expected, log)) in expected.iter().zip(logs).enumerate() {
        let frames: Vec<Received> = log
            .frames
            .iter()
            .map(|f| parse_frame(f, &by_name))
            .collect();
        let found = match_connection(expected, &frames);

        outcome.expected += expected.len() as u64;
        outcome.frames += frames.len() as u64;
        outcome.delivered_own += found.delivered_own;
        outcome.delivered_merged += found.delivered_merged;
        outcome.missing += found.missing.len() as u64;
        outcome.unexpected_frames += found.unexpected.len() as u64;
        outcome.latencies.extend(found.latencies);
        last_delivery = last_delivery.max(found.last_delivery);
        for &k in found.missing.iter().take(KEPT_EXAMPLES) {
            if outcome.examples.len() < KEPT_EXAMPLES * 2 {
                let e = &expected[k];
                outcome.examples.push(format!(
                    "connection {c}: publish {} never delivered",
                    e.publish
                ));
            }
        }
        for &f in found.unexpected.iter().take(KEPT_EXAMPLES) {
            if outcome.examples.len() < KEPT_EXAMPLES * 2 {
                outcome.examples.push(format!(
                    "connection {c}: unexpected {}",
                    log.frames[f].text.as_str()
                ));
            }
        }
    }

    outcome.latencies.sort_unstable();
    let first_sent = sent.iter().flatten().min();
    if let (Some(first), Some(last)) = (first_sent, last_delivery) {
        outcome.window = last.saturating_duration_since(*first);
    }
    outcome
}

/// For each connection, its expected deliveries in the order the publishes were written.
fn expected_deliveries(workload: &Workload, sent: &[Option<Instant>]) -> Vec<Vec<Expected>> {
    let mut order: Vec<(Instant, usize)> = sent
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.map(|s| (s, i)))
        .collect();
    order.sort_unstable();

    let mut expected: Vec<Vec<Expected>> = vec![Vec::new(); workload.subscriptions.len()];
    for (sent, p) in order {
        let publish = &workload.publishes[p];
        for &t in &publish.tags {
            for &c in &workload.subscribers[to_index(t)] {
                let c = to_index(c);
                if workload.conn_user[c] == publish.author {
                    continue;
                }
                let list = &mut expected[c];
                match list.last_mut() {
                    // A publish with several tags the connection tracks is one delivery.
                    Some(last) if last.publish == p => last.tags.push(t),
                    _ => list.push(Expected {
                        publish: p,
                        sent,
                        tags: vec![t],
                    }),
                }
            }
        }
    }
    for list in &mut expected {
        for e in list {
            e.tags.sort_unstable();
        }
    }
    expected
}

fn parse_frame(frame: &Frame, by_name: &HashMap<&str, u32>) -> Received {
    let tags = serde_json::from_str::<serde_json::Value>(frame.text.as_str())
        .ok()
        .filter(|v| v["type"] == "outdated")
        .and_then(|v| {
            let mut tags = v["tags"]
                .as_array()?
                .iter()
                .map(|t| by_name.get(t.as_str()?).copied())
                .collect::<Option<Vec<u32>>>()?;
            tags.sort_unstable();
            tags.dedup();
            Some(tags).filter(|t| !t.is_empty())
        });
    Received { at: frame.at, tags }
}

/// Is every element of ascending `a` in ascending `b`?
fn is_subset(a: &[u32], b: &[u32]) -> bool {
    let mut b = b.iter();
    a.iter().all(|x| b.any(|y| y == x))
}

fn match_connection(expected: &[Expected], frames: &[Received]) -> ConnectionOutcome {
    let mut out = ConnectionOutcome::default();
    // The frame each expected delivery is credited to, and each frame's deliveries.
    let mut credited: Vec<Option<usize>> = vec![None; expected.len()];
    let mut groups: Vec<Vec<usize>> = vec![Vec::new(); frames.len()];

    // Rule 1, and rule 3 for the frames it leaves unexplained.
    for (f, frame) in frames.iter().enumerate().rev() {
        let Some(tags) = &frame.tags else {
            out.unexpected.push(f);
            continue;
        };
        let mut unexplained = tags.clone();
        let written_before = expected.partition_point(|e| e.sent < frame.at);
        for k in (0..written_before).rev() {
            if unexplained.is_empty() {
                break;
            }
            let relevant = &expected[k].tags;
            if credited[k].is_none()
                && relevant.iter().any(|t| unexplained.contains(t))
                && is_subset(relevant, tags)
            {
                credited[k] = Some(f);
                groups[f].push(k);
                unexplained.retain(|t| !relevant.contains(t));
            }
        }
        if !unexplained.is_empty() {
            out.unexpected.push(f);
        }
    }
    out.unexpected.reverse();

    // Rules 2 and 4.
    for (k, e) in expected.iter().enumerate() {
        if credited[k].is_some() {
            continue;
        }
        let after = frames.partition_point(|frame| frame.at <= e.sent);
        let cover = frames[after..].iter().position(|frame| {
            frame
                .tags
                .as_deref()
                .is_some_and(|tags| is_subset(&e.tags, tags))
        });
        match cover {
            Some(offset) => {
                credited[k] = Some(after + offset);
                groups[after + offset].push(k);
            }
            None => out.missing.push(k),
        }
    }

    for (k, e) in expected.iter().enumerate() {
        if let Some(f) = credited[k] {
            if groups[f].len() > 1 {
                out.delivered_merged += 1;
            } else {
                out.delivered_own += 1;
            }
            out.latencies.push(frames[f].at - e.sent);
            out.last_delivery = out.last_delivery.max(Some(frames[f].at));
        }
    }
    out
}

/// Scripted cases for the smoke run: each returns an error naming what went wrong.
pub fn self_check() -> Result<(), String> {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let exp = |publish: usize, sent: u64, tags: &[u32]| Expected {
        publish,
        sent: at(sent),
        tags: tags.to_vec(),
    };
    let frame = |ms: u64, tags: &[u32]| Received {
        at: at(ms),
        tags: Some(tags.to_vec()),
    };

    let check = |name: &str,
                 got: &ConnectionOutcome,
                 own: u64,
                 merged: u64,
                 missing: usize,
                 unexpected: usize| {
        let seen = (
            got.delivered_own,
            got.delivered_merged,
            got.missing.len(),
            got.unexpected.len(),
        );
        if seen == (own, merged, missing, unexpected) {
            Ok(())
        } else {
            Err(format!(
                "analysis case {name}: (own, merged, missing, unexpected) = {seen:?}, \
                 expected {:?}",
                (own, merged, missing, unexpected)
            ))
        }
    };

    let latencies = |name: &str, got: &ConnectionOutcome, ms: &[u64]| {
        let want: Vec<Duration> = ms.iter().map(|&m| Duration::from_millis(m)).collect();
        if got.latencies == want {
            Ok(())
        } else {
            Err(format!(
                "analysis case {name}: latencies {:?}, expected {want:?}",
                got.latencies
            ))
        }
    };

    // One frame per change, the first in flight while the second is written.
    let expected = [exp(0, 0, &[1]), exp(1, 5, &[1])];
    let got = match_connection(&expected, &[frame(6, &[1]), frame(7, &[1])]);
    check("one frame per change", &got, 2, 0, 0, 0)?;
    latencies("one frame per change", &got, &[6, 2])?;

    // Two changes of the same tag merged into one frame.
    let got = match_connection(&expected, &[frame(6, &[1])]);
    check("merged same tag", &got, 0, 2, 0, 0)?;

    // A merge does not shift the credit of later frames: the next change is on time.
    let expected = [exp(0, 0, &[1]), exp(1, 1, &[1]), exp(2, 100, &[1])];
    let got = match_connection(&expected, &[frame(2, &[1]), frame(101, &[1])]);
    check("merge then own frame", &got, 1, 2, 0, 0)?;
    latencies("merge then own frame", &got, &[2, 1, 1])?;

    // A connection three changes behind is not read as one merge then instant deliveries.
    let expected: Vec<Expected> = (0..6).map(|i| exp(i as usize, i * 10, &[1])).collect();
    let frames: Vec<Received> = (0..6).map(|i| frame(i * 10 + 35, &[1])).collect();
    let got = match_connection(&expected, &frames);
    check("lagging connection", &got, 6, 0, 0, 0)?;
    latencies("lagging connection", &got, &[35; 6])?;

    // Two changes of different tags merged into one frame.
    let expected = [exp(0, 0, &[1]), exp(1, 1, &[2])];
    let got = match_connection(&expected, &[frame(3, &[1, 2])]);
    check("merged different tags", &got, 0, 2, 0, 0)?;

    // A change never delivered, and a frame for a tag nobody published.
    let got = match_connection(&expected, &[frame(3, &[1]), frame(4, &[3])]);
    check("missing and unexpected", &got, 1, 0, 1, 1)?;

    // A frame that arrives before its publish was written cannot be its delivery.
    let expected = [exp(0, 10, &[1])];
    let got = match_connection(&expected, &[frame(5, &[1])]);
    check("frame before publish", &got, 0, 0, 1, 1)?;

    // A change delivered twice.
    let expected = [exp(0, 0, &[1, 2])];
    let got = match_connection(&expected, &[frame(1, &[1, 2]), frame(2, &[1, 2])]);
    check("duplicate", &got, 1, 0, 0, 1)?;

    // A frame listing only part of a change's tags delivers nothing.
    let got = match_connection(&expected, &[frame(1, &[1])]);
    check("partial frame", &got, 0, 0, 1, 1)?;
    Ok(())
}
