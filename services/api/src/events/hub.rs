//! The hub: which users have open event streams, and the cheap wake-up of each user's streams
//! when a feed notice names that user.
//!
//! One entry per user with at least one stream: a `watch` channel whose value says how often
//! and for which transaction the user's streams were woken. Waking a user is one lock and one
//! `send_modify`, whatever the number of its streams; a stream that was busy reading when
//! several notices arrived sees one change (the wakes coalesce), and reads once. The entry goes
//! when the user's last stream ends.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use tasksync_shared::feed::{FeedNotice, NoticeUsers};
use tokio::sync::watch;

use crate::{error::ApiError, metrics::ApiMetrics};

/// What a user's streams were last woken for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Wake {
    /// Counts wakes; a stream reads when it moves.
    pub seq: u64,
    /// The highest transaction a notice named for this user; `None` until one did (a wake
    /// after the `LISTEN` session reconnected names none).
    pub xid: Option<u64>,
}

#[derive(Debug)]
struct Entry {
    wake: watch::Sender<Wake>,
    streams: usize,
}

#[derive(Debug, Default)]
struct Users {
    by_user: HashMap<String, Entry>,
    streams: usize,
}

/// Stream limits of one api.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_streams: usize,
    pub max_per_user: usize,
}

/// The users with open streams. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Hub {
    users: Arc<Mutex<Users>>,
    limits: Limits,
    metrics: ApiMetrics,
    closing: watch::Sender<bool>,
}

/// An open stream's place in the hub; leaving it (drop) removes the user's entry with its last
/// stream.
#[derive(Debug)]
pub struct Subscription {
    hub: Hub,
    user: String,
    pub wake: watch::Receiver<Wake>,
    pub closing: watch::Receiver<bool>,
}

impl Hub {
    pub fn new(limits: Limits, metrics: ApiMetrics) -> Self {
        Self {
            users: Arc::default(),
            limits,
            metrics,
            closing: watch::Sender::new(false),
        }
    }

    fn users(&self) -> MutexGuard<'_, Users> {
        // A panic while holding the lock cannot leave the map inconsistent (each change is
        // one insert or remove): go on with it.
        self.users
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Opens a stream for `user`: 503 over the api's limit (or while shutting down), 429 over
    /// the user's.
    pub fn subscribe(&self, user: &str) -> Result<Subscription, ApiError> {
        if *self.closing.borrow() {
            return Err(ApiError::Unavailable("the api is shutting down".into()));
        }
        let mut users = self.users();
        if users.streams >= self.limits.max_streams {
            return Err(ApiError::Unavailable(format!(
                "this api serves {} event streams, its limit (EVENTS_MAX_SUBSCRIBERS); retry, \
                 or pull GET /api/changes meanwhile",
                self.limits.max_streams
            )));
        }
        let open = users.by_user.get(user).map_or(0, |e| e.streams);
        if open >= self.limits.max_per_user {
            return Err(ApiError::TooManyRequests(
                format!(
                    "this user has {open} event streams open, the limit; close one (it resumes \
                     with Last-Event-ID)"
                ),
                5,
            ));
        }
        let entry = users
            .by_user
            .entry(user.to_string())
            .or_insert_with(|| Entry {
                wake: watch::Sender::new(Wake::default()),
                streams: 0,
            });
        entry.streams += 1;
        let wake = entry.wake.subscribe();
        users.streams += 1;
        drop(users);
        self.metrics.events_subscribers(1.0);
        Ok(Subscription {
            hub: self.clone(),
            user: user.to_string(),
            wake,
            closing: self.closing.subscribe(),
        })
    }

    /// Wakes the streams of the users `notice` names (every user's for `*`), or every stream
    /// when the payload is not a notice.
    pub fn notify(&self, payload: &str) {
        let users = self.users();
        let Some(notice) = FeedNotice::parse(payload) else {
            tracing::warn!(
                payload,
                "a feed notice that is not one; waking every stream"
            );
            users.by_user.values().for_each(|e| wake(e, None));
            return;
        };
        match &notice.users {
            NoticeUsers::All => users
                .by_user
                .values()
                .for_each(|e| wake(e, Some(notice.xid))),
            NoticeUsers::Some(names) => names
                .iter()
                .filter_map(|name| users.by_user.get(name))
                .for_each(|e| wake(e, Some(notice.xid))),
        }
    }

    /// Wakes every stream (after the `LISTEN` session (re)connected: notices may have been
    /// missed meanwhile).
    pub fn wake_all(&self) {
        self.users().by_user.values().for_each(|e| wake(e, None));
    }

    /// Ends every stream and refuses new ones (the api is stopping).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// A receiver that sees [`Hub::close`].
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Open streams.
    pub fn streams(&self) -> usize {
        self.users().streams
    }

    pub fn metrics(&self) -> &ApiMetrics {
        &self.metrics
    }
}

fn wake(entry: &Entry, xid: Option<u64>) {
    entry.wake.send_modify(|w| {
        w.seq += 1;
        w.xid = w.xid.max(xid);
    });
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut users = self.hub.users();
        users.streams = users.streams.saturating_sub(1);
        if let Some(entry) = users.by_user.get_mut(&self.user) {
            entry.streams = entry.streams.saturating_sub(1);
            if entry.streams == 0 {
                users.by_user.remove(&self.user);
            }
        }
        drop(users);
        self.hub.metrics.events_subscribers(-1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(max_streams: usize, max_per_user: usize) -> Hub {
        let limits = Limits {
            max_streams,
            max_per_user,
        };
        Hub::new(limits, ApiMetrics::new())
    }

    #[test]
    fn a_notice_wakes_the_users_it_names_and_no_one_else() {
        let hub = hub(10, 10);
        let (mut alice, mut bob) = (
            hub.subscribe("alice").unwrap(),
            hub.subscribe("bob").unwrap(),
        );
        hub.notify(r#"{"xid":"41","users":["alice","carol"]}"#);
        hub.notify(r#"{"xid":"40","users":["alice"]}"#);
        assert!(alice.wake.has_changed().unwrap());
        assert!(!bob.wake.has_changed().unwrap());
        let woken = *alice.wake.borrow_and_update();
        assert_eq!(
            woken,
            Wake {
                seq: 2,
                xid: Some(41)
            },
            "coalesced, highest xid kept"
        );
        hub.notify(r#"{"xid":"50","users":"*"}"#);
        assert_eq!(bob.wake.borrow_and_update().xid, Some(50));
        hub.wake_all();
        hub.notify("garbage");
        assert_eq!(
            *alice.wake.borrow_and_update(),
            Wake {
                seq: 5,
                xid: Some(50)
            }
        );
    }

    #[test]
    fn limits_answer_503_per_api_and_429_per_user_and_free_up_on_drop() {
        let hub = hub(3, 2);
        let a1 = hub.subscribe("a").unwrap();
        let _a2 = hub.subscribe("a").unwrap();
        let per_user = hub.subscribe("a").unwrap_err();
        assert_eq!(per_user.status().as_u16(), 429);
        let _b = hub.subscribe("b").unwrap();
        assert_eq!(hub.subscribe("c").unwrap_err().status().as_u16(), 503);
        drop(a1);
        assert_eq!(hub.streams(), 2);
        let a3 = hub.subscribe("a").unwrap();
        hub.close();
        drop(a3);
        assert_eq!(hub.subscribe("d").unwrap_err().status().as_u16(), 503);
    }

    #[test]
    fn the_last_stream_of_a_user_removes_its_entry() {
        let hub = hub(10, 10);
        let (one, two) = (hub.subscribe("a").unwrap(), hub.subscribe("a").unwrap());
        drop(one);
        assert_eq!(hub.users().by_user.len(), 1);
        drop(two);
        assert!(hub.users().by_user.is_empty());
        assert_eq!(hub.streams(), 0);
    }
}
