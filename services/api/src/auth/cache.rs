//! Tokens already verified, so that a client sending the same token on every request pays for
//! the signature once: an RS256 or ES256 check costs 100–150 µs of CPU, a lookup here well
//! under one. An entry lasts until the token's `exp` (plus the leeway), at most [`MAX_AGE`],
//! and only while the keys are the ones it was verified with (the key set's generation): a key
//! set fetched with other keys empties it for every token. Keyed by the whole token text: only
//! a byte-identical token finds an entry. Bounded by [`MAX_ENTRIES`]; when full, expired entries go, and if none had
//! expired, all of them (the next requests verify again).

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

pub const MAX_AGE: Duration = Duration::from_secs(300);
pub const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Default)]
pub struct VerifiedTokens {
    entries: Mutex<HashMap<Box<str>, Entry>>,
}

#[derive(Debug)]
struct Entry {
    user: String,
    /// Seconds since the epoch after which the entry is not used.
    until: u64,
    /// The key set's generation it was verified under.
    generation: u64,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl VerifiedTokens {
    /// The user of a token verified before and still within its entry's time.
    pub fn get(&self, token: &str, generation: u64) -> Option<String> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(token)
            .filter(|entry| entry.generation == generation && now() <= entry.until)
            .map(|entry| entry.user.clone())
    }

    /// Remembers a token just verified, good until `valid_until` (its `exp` plus the leeway).
    pub fn insert(&self, token: &str, user: &str, valid_until: u64, generation: u64) {
        let now = now();
        let until = valid_until.min(now + MAX_AGE.as_secs());
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, entry| entry.until >= now && entry.generation == generation);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(
            token.into(),
            Entry {
                user: user.to_string(),
                until,
                generation,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_serves_until_its_time_and_the_cache_stays_bounded() {
        let cache = VerifiedTokens::default();
        cache.insert("a.b.c", "alice", now() + 3600, 1);
        assert_eq!(cache.get("a.b.c", 1).as_deref(), Some("alice"));
        assert_eq!(cache.get("a.b.c", 2), None, "other keys since");
        assert_eq!(cache.get("a.b.d", 1), None);
        cache.insert("old", "bob", now() - 1, 1);
        assert_eq!(cache.get("old", 1), None);
        for n in 0..MAX_ENTRIES + 10 {
            cache.insert(&format!("t{n}"), "u", now() + 60, 1);
        }
        let len = cache.entries.lock().map(|e| e.len()).unwrap_or_default();
        assert!(len <= MAX_ENTRIES, "{len}");
    }
}
