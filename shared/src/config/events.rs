//! The api's live event streams (`GET /api/events`): heartbeat period and subscriber limits
//! (`EVENTS_HEARTBEAT_SECS`, `EVENTS_MAX_SUBSCRIBERS`, `EVENTS_MAX_PER_USER`).

use std::time::Duration;

/// Default `EVENTS_HEARTBEAT_SECS`: well under the idle timeouts of common proxies (60 s).
pub const DEFAULT_EVENTS_HEARTBEAT: Duration = Duration::from_secs(15);
/// Default `EVENTS_MAX_SUBSCRIBERS`.
pub const DEFAULT_EVENTS_MAX_SUBSCRIBERS: usize = 10_000;
/// Default `EVENTS_MAX_PER_USER` when authentication is on: a user's phone, laptop and a few
/// browser tabs, not a flood of streams. In development mode every request is one user, so the
/// per-user limit is the per-api one.
pub const DEFAULT_EVENTS_PER_USER: usize = 16;

/// Settings of `GET /api/events`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventsSettings {
    /// `EVENTS_HEARTBEAT_SECS`: how often an idle stream gets a `: keepalive` comment (and its
    /// safety read of the feed).
    pub heartbeat: Duration,
    /// `EVENTS_MAX_SUBSCRIBERS`: open streams one api serves at most (503 over it).
    pub max_subscribers: usize,
    /// `EVENTS_MAX_PER_USER`: open streams of one user at most (429 over it).
    pub max_per_user: usize,
}

impl Default for EventsSettings {
    fn default() -> Self {
        Self {
            heartbeat: DEFAULT_EVENTS_HEARTBEAT,
            max_subscribers: DEFAULT_EVENTS_MAX_SUBSCRIBERS,
            max_per_user: DEFAULT_EVENTS_MAX_SUBSCRIBERS,
        }
    }
}

impl EventsSettings {
    /// From the variables as read (`None`: unset); `authenticated` picks the per-user default.
    pub(super) fn from_variables(
        heartbeat_secs: Option<u64>,
        max_subscribers: Option<usize>,
        max_per_user: Option<usize>,
        authenticated: bool,
    ) -> Self {
        let max_subscribers = max_subscribers.unwrap_or(DEFAULT_EVENTS_MAX_SUBSCRIBERS);
        let default_per_user = if authenticated {
            DEFAULT_EVENTS_PER_USER
        } else {
            max_subscribers
        };
        Self {
            heartbeat: heartbeat_secs.map_or(DEFAULT_EVENTS_HEARTBEAT, Duration::from_secs),
            max_subscribers,
            max_per_user: max_per_user.unwrap_or(default_per_user),
        }
    }
}
