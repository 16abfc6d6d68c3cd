//! Live events (`GET /api/events`, Server-Sent Events): the caller's changes feed, pushed.
//!
//! The worker's transaction that decided anything sends a feed notice (`pg_notify`, see
//! [`tasksync_shared::feed`]) naming the transaction and the users it touched; Postgres
//! delivers it at commit. Each api:
//! - [`listen`]: holds one `LISTEN` session of its own, reconnecting with backoff, and hands
//!   each notice to the hub;
//! - [`hub`]: maps each user with open streams to a cheap wake-up, and holds the stream limits
//!   (`EVENTS_MAX_SUBSCRIBERS` per api: 503; `EVENTS_MAX_PER_USER`: 429);
//! - [`stream`]: per stream, a task that reads the feed from the stream's cursor (the same read
//!   as `GET /api/changes`, so the events' ids are changes cursors and a resume neither skips
//!   nor repeats) and feeds the response body through a bounded channel.
//!
//! No broker message per operation: one notice per committed worker transaction, and one feed
//! read per woken stream. Several apis each serve their own streams from the same notices.

pub mod hub;
pub mod listen;
pub mod stream;

pub use hub::{Hub, Limits, Subscription};
