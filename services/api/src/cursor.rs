//! The opaque cursors of the api's paged reads: the changes feed's [`Position`] and the task
//! list's [`ListPosition`].
//!
//! Both travel as 50 hex digits: a version byte that also says which read the cursor belongs
//! to, eight bytes of ordering key, and the task id. Clients store and send them back without
//! being tempted to read meaning into them, a cursor of one read is refused by the other, and
//! either can change shape later under a new version byte.
//!
//! - [`Position`]: `(change_xid, task id)` of the last row served: the id of the transaction
//!   that last changed the task (`tasks.change_xid`, a 64-bit `xid8`), then the task id to
//!   order rows of one transaction.
//! - [`ListPosition`]: `(created_at, task id)` of the last task listed, `created_at` in
//!   microseconds since the epoch (Postgres' own precision, so the keyset compares exactly).
//! - [`FeedCursor`]: what `GET /api/changes` hands out since retention exists: a [`Position`]
//!   and the retention generation it was read under (eight more bytes, 66 hex digits, its own
//!   version byte). A cursor below what retention removed is expired only if a sweep ran
//!   since it was handed out ([`FeedCursor::expired`]): a client paging from an empty cursor
//!   is never sent back to the start by rows that were gone before it began. A bare
//!   [`Position`] cursor (version 1) reads as generation 0.
//!
//! - [`ConflictPosition`]: the record id of the last conflict served (newest first), and the
//!   task whose history it is.
//!
//! [`page_limit`] reads the `limit` parameter both reads take.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::ApiError;

const CHANGES_VERSION: u8 = 1;
const LIST_VERSION: u8 = 2;
const CONFLICTS_VERSION: u8 = 3;
const FEED_VERSION: u8 = 4;
const BYTES: usize = 1 + 8 + 16;
const FEED_BYTES: usize = BYTES + 8;

/// Where a page of the feed ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub xid: u64,
    pub id: Uuid,
}

impl Position {
    /// Before every change: where an empty cursor starts.
    pub const START: Self = Self {
        xid: 0,
        id: Uuid::nil(),
    };

    pub fn encode(self) -> String {
        encode(CHANGES_VERSION, self.xid.to_be_bytes(), self.id)
    }

    /// Reads a cursor this api handed out; `None` when it is not one. An empty cursor is the
    /// start of the feed.
    pub fn decode(cursor: &str) -> Option<Self> {
        if cursor.is_empty() {
            return Some(Self::START);
        }
        let (key, id) = decode(CHANGES_VERSION, cursor)?;
        Some(Self {
            xid: u64::from_be_bytes(key),
            id,
        })
    }
}

impl Position {
    /// Past every position whose transaction id is below `horizon`: the end of the feed read
    /// under that horizon.
    pub fn end_below(horizon: u64) -> Self {
        Self {
            xid: horizon.saturating_sub(1),
            id: Uuid::max(),
        }
    }
}

/// A changes-feed cursor: where a page ended, and the retention generation (how many sweeps
/// had removed feed rows) when it was read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FeedCursor {
    pub position: Position,
    pub generation: u64,
}

impl FeedCursor {
    pub fn encode(self) -> String {
        let mut bytes = Vec::with_capacity(FEED_BYTES);
        bytes.push(FEED_VERSION);
        bytes.extend_from_slice(&self.position.xid.to_be_bytes());
        bytes.extend_from_slice(self.position.id.as_bytes());
        bytes.extend_from_slice(&self.generation.to_be_bytes());
        hex(&bytes)
    }

    /// Reads a cursor this api handed out (either version); `None` when it is not one. An
    /// empty cursor is the start of the feed.
    pub fn decode(cursor: &str) -> Option<Self> {
        if cursor.len() == BYTES * 2 || cursor.is_empty() {
            return Position::decode(cursor).map(|position| Self {
                position,
                generation: 0,
            });
        }
        let bytes = unhex(cursor, FEED_BYTES)?;
        if bytes[0] != FEED_VERSION {
            return None;
        }
        Some(Self {
            position: Position {
                xid: u64::from_be_bytes(bytes[1..9].try_into().ok()?),
                id: Uuid::from_slice(&bytes[9..25]).ok()?,
            },
            generation: u64::from_be_bytes(bytes[25..].try_into().ok()?),
        })
    }

    /// Whether rows this cursor had not reached may have been removed: retention removed rows
    /// up to `pruned` in some sweep after generation `self.generation`, and the cursor lies
    /// below them. The start of the feed never expires (a client starting over misses
    /// nothing), nor does a cursor at or past everything removed.
    pub fn expired(self, pruned: Position, generation: u64) -> bool {
        self.position != Position::START && self.generation < generation && self.position < pruned
    }
}

/// Where a page of `GET /api/tasks` ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListPosition {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

impl ListPosition {
    pub fn encode(self) -> String {
        let micros = self.created_at.timestamp_micros();
        encode(LIST_VERSION, micros.to_be_bytes(), self.id)
    }

    /// Reads a list cursor this api handed out; `None` when it is not one.
    pub fn decode(cursor: &str) -> Option<Self> {
        let (key, id) = decode(LIST_VERSION, cursor)?;
        let created_at = DateTime::from_timestamp_micros(i64::from_be_bytes(key))?;
        Some(Self { created_at, id })
    }
}

/// Where a page of a task's conflict history (`GET /api/tasks/{id}/conflicts`) ends: the
/// record id (`task_conflicts.id`) of its last, oldest record, and the task, so that a cursor
/// of one task's history is refused for another's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConflictPosition {
    pub record: i64,
    pub task: Uuid,
}

impl ConflictPosition {
    pub fn encode(self) -> String {
        encode(CONFLICTS_VERSION, self.record.to_be_bytes(), self.task)
    }

    /// Reads a conflicts cursor this api handed out; `None` when it is not one.
    pub fn decode(cursor: &str) -> Option<Self> {
        let (key, task) = decode(CONFLICTS_VERSION, cursor)?;
        Some(Self {
            record: i64::from_be_bytes(key),
            task,
        })
    }
}

/// The `limit` query parameter of a paged read: `default` when absent or empty, else an
/// integer from 1 to `max`. Read from text, so that a bad value gets a message naming it.
pub fn page_limit(text: Option<&str>, default: usize, max: usize) -> Result<usize, ApiError> {
    match text.map(str::trim) {
        None | Some("") => Ok(default),
        Some(text) => text
            .parse()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "limit: must be an integer from 1 to {max}, got {text:?}"
                ))
            }),
    }
}

fn encode(version: u8, key: [u8; 8], id: Uuid) -> String {
    let mut bytes = Vec::with_capacity(BYTES);
    bytes.push(version);
    bytes.extend_from_slice(&key);
    bytes.extend_from_slice(id.as_bytes());
    hex(&bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// `len` bytes from their hex digits; `None` for anything else.
fn unhex(cursor: &str, len: usize) -> Option<Vec<u8>> {
    if cursor.len() != len * 2 || !cursor.is_ascii() {
        return None;
    }
    (0..len)
        .map(|i| u8::from_str_radix(&cursor[2 * i..2 * i + 2], 16).ok())
        .collect()
}

fn decode(version: u8, cursor: &str) -> Option<([u8; 8], Uuid)> {
    let bytes = unhex(cursor, BYTES)?;
    if bytes[0] != version {
        return None;
    }
    let key = bytes[1..9].try_into().ok()?;
    let id = Uuid::from_slice(&bytes[9..]).ok()?;
    Some((key, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_survives_the_round_trip() {
        let p = Position {
            xid: (7 << 32) + 1234,
            id: Uuid::new_v4(),
        };
        let cursor = p.encode();
        assert_eq!(cursor.len(), 50);
        assert_eq!(Position::decode(&cursor), Some(p));
        assert_eq!(Position::decode(""), Some(Position::START));
    }

    #[test]
    fn a_list_position_survives_the_round_trip_to_the_microsecond() {
        for micros in [0, 1_764_000_000_123_456, -86_400_000_001] {
            let p = ListPosition {
                created_at: DateTime::from_timestamp_micros(micros).unwrap(),
                id: Uuid::new_v4(),
            };
            let cursor = p.encode();
            assert_eq!(cursor.len(), 50);
            assert_eq!(ListPosition::decode(&cursor), Some(p));
        }
    }

    #[test]
    fn anything_else_is_not_a_cursor() {
        let good = Position::START.encode();
        for bad in [
            "x",
            "12:0e0c",
            &good[..48],
            &format!("02{}", &good[2..]),
            &format!("{}zz", &good[..48]),
            "é".repeat(25).as_str(),
        ] {
            assert_eq!(Position::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_feed_cursor_survives_the_round_trip_and_reads_the_older_version() {
        let cursor = FeedCursor {
            position: Position {
                xid: (7 << 32) + 1234,
                id: Uuid::new_v4(),
            },
            generation: 3,
        };
        let text = cursor.encode();
        assert_eq!(text.len(), 66);
        assert_eq!(FeedCursor::decode(&text), Some(cursor));
        let older = FeedCursor::decode(&cursor.position.encode()).unwrap();
        assert_eq!((older.position, older.generation), (cursor.position, 0));
        assert_eq!(FeedCursor::decode(""), Some(FeedCursor::default()));
        for bad in [
            &text[..64],
            &format!("01{}", &text[2..]),
            "zz".repeat(33).as_str(),
        ] {
            assert_eq!(FeedCursor::decode(bad), None, "{bad}");
        }
        assert_eq!(ListPosition::decode(&text), None);
    }

    #[test]
    fn a_cursor_expires_only_below_what_a_later_sweep_removed() {
        let at = |xid| Position {
            xid,
            id: Uuid::from_u128(5),
        };
        let cursor = |xid, generation| FeedCursor {
            position: at(xid),
            generation,
        };
        let pruned = at(100);
        assert!(cursor(99, 1).expired(pruned, 2), "below, and swept since");
        assert!(
            !cursor(99, 2).expired(pruned, 2),
            "read after the last sweep"
        );
        assert!(!cursor(100, 1).expired(pruned, 2), "at what was removed");
        assert!(!cursor(150, 0).expired(pruned, 2), "past it");
        assert!(
            !FeedCursor::default().expired(pruned, 2),
            "the start never expires"
        );
        assert!(
            !cursor(0, 0).expired(Position::START, 0),
            "nothing removed yet"
        );
    }

    #[test]
    fn the_end_below_a_horizon_is_past_every_position_under_it() {
        let end = Position::end_below(1_000);
        assert!(
            Position {
                xid: 999,
                id: Uuid::max()
            } <= end
        );
        assert!(
            end < Position {
                xid: 1_000,
                id: Uuid::nil()
            }
        );
        assert_eq!(Position::end_below(0).xid, 0);
    }

    #[test]
    fn a_cursor_of_one_read_is_refused_by_the_other() {
        let feed = Position {
            xid: 42,
            id: Uuid::new_v4(),
        }
        .encode();
        let list = ListPosition {
            created_at: Utc::now(),
            id: Uuid::new_v4(),
        }
        .encode();
        assert_eq!(ListPosition::decode(&feed), None);
        assert_eq!(Position::decode(&list), None);
        assert_eq!(ListPosition::decode(""), None);
        let conflicts = ConflictPosition {
            record: 10_000,
            task: Uuid::new_v4(),
        };
        assert_eq!(
            ConflictPosition::decode(&conflicts.encode()),
            Some(conflicts)
        );
        assert_eq!(ConflictPosition::decode(&feed), None);
        assert_eq!(ConflictPosition::decode(&list), None);
        assert_eq!(Position::decode(&conflicts.encode()), None);
        assert_eq!(ConflictPosition::decode(""), None);
    }
}
