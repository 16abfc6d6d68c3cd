//! The feed notice: what the sync-worker tells the apis, through Postgres `NOTIFY`, when a
//! transaction of its decided anything, so that their live event streams read the feed again.
//!
//! The worker sends it inside the transaction (`pg_notify`, which Postgres delivers only at
//! commit, and not at all on rollback): the payload is `{"xid":"<transaction id>","users":[…]}`,
//! the users being those whose feed the transaction moved, or `"*"` when their list would not
//! fit Postgres's 8,000-byte payload limit. JSON keeps user ids of any characters unambiguous.
//! The transaction id is added by the database (`pg_current_xact_id()`), see
//! [`users_json`]; the api reads the payload with [`FeedNotice::parse`].

use serde::Deserialize;

/// The `LISTEN` / `NOTIFY` channel. Notifications are per database, so stacks on separate
/// databases never hear each other.
pub const CHANNEL: &str = "tasksync_feed";

/// Longest `users` JSON a notice carries: Postgres refuses payloads of 8,000 bytes or more, and
/// the rest of the payload (`{"xid":"…","users":}` with a 20-digit id) takes under 40.
pub const MAX_USERS_JSON: usize = 7_900;

/// The `users` part of a notice for `users` (duplicates removed, any order): a JSON array of
/// strings, or `"*"` (every user) when that array would be longer than [`MAX_USERS_JSON`].
pub fn users_json<'a>(users: impl IntoIterator<Item = &'a str>) -> String {
    let mut users: Vec<&str> = users.into_iter().collect();
    users.sort_unstable();
    users.dedup();
    match serde_json::to_string(&users) {
        Ok(json) if json.len() <= MAX_USERS_JSON => json,
        _ => "\"*\"".to_string(),
    }
}

/// Whose feed a notice concerns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoticeUsers {
    /// Every user (the list did not fit).
    All,
    /// These users.
    Some(Vec<String>),
}

/// A notice as the api reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedNotice {
    /// The id (`xid8`) of the transaction that committed.
    pub xid: u64,
    pub users: NoticeUsers,
}

#[derive(Deserialize)]
struct Wire {
    xid: String,
    users: serde_json::Value,
}

impl FeedNotice {
    /// Reads a payload; `None` when it is not a notice (the api then wakes every subscriber).
    pub fn parse(payload: &str) -> Option<Self> {
        let wire: Wire = serde_json::from_str(payload).ok()?;
        let xid = wire.xid.parse().ok()?;
        let users = match wire.users {
            serde_json::Value::String(all) if all == "*" => NoticeUsers::All,
            list => NoticeUsers::Some(serde_json::from_value(list).ok()?),
        };
        Some(Self { xid, users })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(xid: u64, users: &str) -> String {
        format!("{{\"xid\":\"{xid}\",\"users\":{users}}}")
    }

    #[test]
    fn users_of_any_characters_survive_the_round_trip() {
        let odd = ["a,b", "\"quoted\"", "*", "new\nline", "nul\u{0}", "é✓"];
        let json = users_json(odd.iter().copied().chain(["a,b"]));
        let notice = FeedNotice::parse(&payload(42, &json)).unwrap();
        let mut expected: Vec<String> = odd.iter().map(ToString::to_string).collect();
        expected.sort();
        assert_eq!(notice.xid, 42);
        assert_eq!(notice.users, NoticeUsers::Some(expected));
    }

    #[test]
    fn too_many_users_become_every_user_and_the_payload_stays_under_the_limit() {
        let many: Vec<String> = (0..2_000).map(|i| format!("user-{i}")).collect();
        let json = users_json(many.iter().map(String::as_str));
        assert_eq!(json, "\"*\"");
        let fits: Vec<String> = (0..500).map(|i| format!("u{i:05}")).collect();
        let json = users_json(fits.iter().map(String::as_str));
        assert!(json.starts_with('['));
        assert!(payload(u64::MAX, &json).len() < 8_000);
        let all = FeedNotice::parse(&payload(7, "\"*\"")).unwrap();
        assert_eq!(all.users, NoticeUsers::All);
    }

    #[test]
    fn anything_else_is_not_a_notice() {
        for bad in [
            "",
            "42",
            "{\"xid\":42,\"users\":[]}",
            "{\"xid\":\"x\",\"users\":[]}",
            "{\"xid\":\"1\",\"users\":\"some\"}",
            "{\"xid\":\"1\",\"users\":[1]}",
        ] {
            assert_eq!(FeedNotice::parse(bad), None, "{bad}");
        }
    }
}
