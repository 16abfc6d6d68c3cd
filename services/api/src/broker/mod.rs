//! The api's link to RabbitMQ: publishing operations with publisher confirms, learning their
//! outcomes from the worker, and sampling queue depths for `/api/status`.
//!
//! Each api instance declares its own exclusive, server-named reply queue on every connect and
//! puts its name in `reply_to` of what it publishes. The worker sends one reply message per api
//! instance per applied batch; the waiters hand each outcome to the request waiting for it.
//! With several replicas, each gets only its own replies. A reply that finds nobody waiting
//! (the request already answered 202) is dropped: the outcome is in the operation log.
//!
//! Layout:
//! - `session`: connecting, reconnecting with backoff, consuming replies; stops promptly when
//!   told to, whatever state the connection is in;
//! - `waiters`: the requests waiting for outcomes, by op id;
//! - `publish`: publishing with confirms, and submitting (publish, then wait for outcomes);
//!   publishes take turns over `API_PUBLISH_CHANNELS` confirming channels, each request's
//!   operations on one of them, so that concurrent requests' confirms are spread over several
//!   of the broker's channel processes while each stays pipelined;
//! - `depths`: queue depths through one long-lived channel, sampled at most once a second.

mod depths;
mod publish;
mod session;
mod waiters;

use std::sync::{
    Arc, RwLock,
    atomic::{AtomicUsize, Ordering},
};

use lapin::{Channel, Connection, types::ShortString};
use tasksync_shared::{Settings, topology::Topology};

pub use depths::{QueueDepth, WorkQueues, work_queues};
pub use publish::{PublishError, Submitted};

/// The live connection, its confirming publish channels, and this instance's reply queue.
#[derive(Clone)]
struct Link {
    connection: Arc<Connection>,
    /// Never empty. The first also declared the topology and consumes the replies: when it
    /// fails, the reply stream ends and the session reconnects.
    channels: Arc<[Channel]>,
    reply_queue: ShortString,
}

impl Link {
    /// The open channel at `turn` (round robin), passing over closed ones.
    fn channel(&self, turn: usize) -> Option<&Channel> {
        let n = self.channels.len();
        (0..n)
            .map(|i| &self.channels[(turn + i) % n])
            .find(|c| c.status().connected())
    }
}

struct Inner {
    url: String,
    /// Shown in the broker's management UI, with the prefix, so operators (and tests) can tell
    /// stacks apart.
    connection_name: String,
    topology: Topology,
    publish_timeout: std::time::Duration,
    publish_channels: usize,
    /// Whose turn it is among the publish channels.
    turn: AtomicUsize,
    link: RwLock<Option<Link>>,
    waiters: waiters::Waiters,
    depths: depths::DepthSampler,
    /// The api's metrics (publish confirms, waits, writes answered), reached by the handlers
    /// through the broker they already hold.
    metrics: crate::metrics::ApiMetrics,
}

/// Cheap to clone; all clones share one connection.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("prefix", &self.inner.topology.prefix())
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl Broker {
    pub fn new(settings: &Settings) -> Self {
        Self {
            inner: Arc::new(Inner {
                url: settings.amqp_url.expose().to_string(),
                connection_name: connection_name(&settings.amqp_prefix),
                topology: Topology::from_settings(settings),
                publish_timeout: settings.publish_timeout,
                publish_channels: settings.publish_channels.max(1),
                turn: AtomicUsize::new(0),
                link: RwLock::new(None),
                waiters: waiters::Waiters::default(),
                depths: depths::DepthSampler::default(),
                metrics: crate::metrics::ApiMetrics::new(),
            }),
        }
    }

    pub fn metrics(&self) -> &crate::metrics::ApiMetrics {
        &self.inner.metrics
    }

    pub fn topology(&self) -> &Topology {
        &self.inner.topology
    }

    fn link(&self) -> Option<Link> {
        self.inner.link.read().ok().and_then(|l| l.clone())
    }

    /// The next publish channel in turn, with the link it belongs to.
    fn publish_channel(&self) -> Option<(Link, Channel)> {
        let link = self.link()?;
        let turn = self.inner.turn.fetch_add(1, Ordering::Relaxed);
        let channel = link.channel(turn)?.clone();
        Some((link, channel))
    }

    fn set_link(&self, link: Option<Link>) {
        if let Ok(mut current) = self.inner.link.write() {
            *current = link;
        }
    }

    pub fn is_connected(&self) -> bool {
        // The reply channel: while it is open, publishes have at least that one.
        self.link().is_some_and(|l| {
            l.connection.status().connected()
                && l.channels.first().is_some_and(|c| c.status().connected())
        })
    }
}

/// The name the api's broker connection carries: `tasksync-api <prefix>`.
pub fn connection_name(prefix: &str) -> String {
    format!("tasksync-api {prefix}")
}
