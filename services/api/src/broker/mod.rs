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
//! - `depths`: queue depths through one long-lived channel, sampled at most once a second.

mod depths;
mod publish;
mod session;
mod waiters;

use std::sync::{Arc, RwLock};

use lapin::{Channel, Connection, types::ShortString};
use tasksync_shared::{Settings, topology::Topology};

pub use depths::QueueDepth;
pub use publish::{PublishError, Submitted};

/// The live connection, its confirming publish channel, and this instance's reply queue.
#[derive(Clone)]
struct Link {
    connection: Arc<Connection>,
    channel: Channel,
    reply_queue: ShortString,
}

struct Inner {
    url: String,
    /// Shown in the broker's management UI, with the prefix, so operators (and tests) can tell
    /// stacks apart.
    connection_name: String,
    topology: Topology,
    publish_timeout: std::time::Duration,
    link: RwLock<Option<Link>>,
    waiters: waiters::Waiters,
    depths: depths::DepthSampler,
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
                link: RwLock::new(None),
                waiters: waiters::Waiters::default(),
                depths: depths::DepthSampler::default(),
            }),
        }
    }

    pub fn topology(&self) -> &Topology {
        &self.inner.topology
    }

    fn link(&self) -> Option<Link> {
        self.inner.link.read().ok().and_then(|l| l.clone())
    }

    fn set_link(&self, link: Option<Link>) {
        if let Ok(mut current) = self.inner.link.write() {
            *current = link;
        }
    }

    pub fn is_connected(&self) -> bool {
        self.link()
            .is_some_and(|l| l.connection.status().connected() && l.channel.status().connected())
    }
}

/// The name the api's broker connection carries: `tasksync-api <prefix>`.
pub fn connection_name(prefix: &str) -> String {
    format!("tasksync-api {prefix}")
}
