//! The changes-feed cursor: a position in commit order, opaque to clients.
//!
//! A position is `(change_xid, task id)` of the last row served: the id of the transaction that
//! last changed the task (`tasks.change_xid`, a 64-bit `xid8`), then the task id to order rows
//! of one transaction. It travels as 50 hex digits (a version byte, the xid, the uuid), so that
//! clients store and send it back without being tempted to read meaning into it, and so that it
//! can change shape later under a new version byte.

use std::fmt::Write as _;

use uuid::Uuid;

const VERSION: u8 = 1;
const BYTES: usize = 1 + 8 + 16;

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
        let mut bytes = Vec::with_capacity(BYTES);
        bytes.push(VERSION);
        bytes.extend_from_slice(&self.xid.to_be_bytes());
        bytes.extend_from_slice(self.id.as_bytes());
        bytes
            .iter()
            .fold(String::with_capacity(BYTES * 2), |mut s, b| {
                let _ = write!(s, "{b:02x}");
                s
            })
    }

    /// Reads a cursor this api handed out; `None` when it is not one. An empty cursor is the
    /// start of the feed.
    pub fn decode(cursor: &str) -> Option<Self> {
        if cursor.is_empty() {
            return Some(Self::START);
        }
        if cursor.len() != BYTES * 2 || !cursor.is_ascii() {
            return None;
        }
        let bytes = (0..BYTES)
            .map(|i| u8::from_str_radix(&cursor[2 * i..2 * i + 2], 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        if bytes[0] != VERSION {
            return None;
        }
        let xid = u64::from_be_bytes(bytes[1..9].try_into().ok()?);
        let id = Uuid::from_slice(&bytes[9..]).ok()?;
        Some(Self { xid, id })
    }
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
}
