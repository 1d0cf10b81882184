//! Where a consumer stands in the outbox, and the process-wide memory of it that outlives a
//! source object. The database's cursor table holds the durable copy; `feed::db` reads and
//! writes it.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

/// A consumer's position in the outbox's `(xid, id)` order: every change of the rows before
/// row `(xid, id)` was handed on, and of that row the first `part` changes (all of them when
/// `part` is [`Position::WHOLE`]). Positions compare in that order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    /// The transaction that wrote the row reached.
    pub xid: u64,
    /// The row reached.
    pub id: i64,
    /// How many of that row's changes were handed on.
    pub part: u32,
}

impl Position {
    /// `part` of a row all of whose changes were handed on.
    pub const WHOLE: u32 = u32::MAX;

    /// Before every row: outbox ids start at 1.
    pub const START: Position = Position {
        xid: 0,
        id: 0,
        part: Position::WHOLE,
    };

    /// How many changes of row `(xid, id)` were already handed on. Rows before the position
    /// are never read again (see [`Position::read_from`]), so only the row at the position
    /// can have any.
    pub fn handed_on(&self, xid: u64, id: i64) -> u32 {
        if (xid, id) == (self.xid, self.id) {
            self.part
        } else {
            0
        }
    }

    /// The first `(xid, id)` to read from: this row when it is partly handed on, else the
    /// next one. Ids are integers, so `>= (xid, id + 1)` means `> (xid, id)`.
    pub fn read_from(&self) -> (u64, i64) {
        if self.part == Position::WHOLE {
            (self.xid, self.id.saturating_add(1))
        } else {
            (self.xid, self.id)
        }
    }

    /// `part` as the cursor table stores it: NULL for a whole row.
    pub fn stored_part(&self) -> Option<i32> {
        (self.part != Position::WHOLE).then(|| i32::try_from(self.part).unwrap_or(i32::MAX))
    }

    /// Rebuilds a position from the cursor table's columns.
    pub fn from_stored(xid: u64, id: i64, part: Option<i32>) -> Position {
        let part = match part {
            None => Position::WHOLE,
            Some(n) => u32::try_from(n).unwrap_or(0),
        };
        Position { xid, id, part }
    }
}

/// The last position each consumer of this process handed on, keyed by database, schema and
/// consumer. The engine rebuilds a source from its settings after `run` returns an error or
/// panics; the new object starts from here when it is ahead of the cursor table, so a
/// change whose cursor write was lost with the connection is not handed on twice. A static
/// lives as long as the plugin library, which the engine never unloads.
static HANDED_ON: Mutex<BTreeMap<String, Position>> = Mutex::new(BTreeMap::new());

/// The key of a consumer in the process-wide memory.
pub fn key(url: &str, schema: &str, consumer: &str) -> String {
    format!("{url}\n{schema}\n{consumer}")
}

/// Records that `key` has handed on everything up to `position`. Never moves back.
pub fn remember(key: &str, position: Position) {
    // The map holds plain values, so one left by a panicking thread is still whole.
    let mut map = HANDED_ON.lock().unwrap_or_else(PoisonError::into_inner);
    match map.get_mut(key) {
        Some(known) => *known = (*known).max(position),
        None => {
            map.insert(key.to_owned(), position);
        }
    }
}

/// The last position `key` handed on in this process, if any.
pub fn remembered(key: &str) -> Option<Position> {
    let map = HANDED_ON.lock().unwrap_or_else(PoisonError::into_inner);
    map.get(key).copied()
}

/// Forgets the remembered position of a consumer, as a restart of the process would: tests
/// use it to check that the cursor table alone resumes a consumer.
#[doc(hidden)]
pub fn forget(url: &str, schema: &str, consumer: &str) {
    HANDED_ON
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&key(url, schema, consumer));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partly_handed_on_row_sorts_before_the_whole_row() {
        let partial = Position {
            xid: 5,
            id: 9,
            part: 1,
        };
        let whole = Position {
            part: Position::WHOLE,
            ..partial
        };
        assert!(partial < whole);
        assert!(
            whole
                < Position {
                    xid: 5,
                    id: 10,
                    part: 0
                }
        );
        assert!(Position::START < partial);
    }

    #[test]
    fn reading_resumes_at_a_partial_row_and_after_a_whole_one() {
        let partial = Position {
            xid: 5,
            id: 9,
            part: 1,
        };
        assert_eq!(partial.read_from(), (5, 9));
        assert_eq!(partial.handed_on(5, 9), 1);
        assert_eq!(partial.handed_on(5, 10), 0);
        let whole = Position::from_stored(5, 9, None);
        assert_eq!(whole.read_from(), (5, 10));
        assert_eq!(whole.stored_part(), None);
        assert_eq!(partial.stored_part(), Some(1));
    }

    #[test]
    fn remembered_positions_never_move_back() {
        let key = "remembered_positions_never_move_back";
        let later = Position {
            xid: 7,
            id: 3,
            part: Position::WHOLE,
        };
        remember(key, later);
        remember(key, Position::START);
        assert_eq!(remembered(key), Some(later));
    }
}
