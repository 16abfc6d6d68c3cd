//! Queue depths for `/api/status` and for the high-water check of writes
//! ([`crate::throttle`]), sampled through one long-lived channel.
//!
//! `/api/status` needs no authentication and every write consults the work queue's depth, so
//! what they cost the broker must not grow with how often they are called. One sampling runs at a time, on a spawned task that owns the sampling
//! channel (opened once, reopened only when it broke: a failed passive declare closes it, and
//! so does a lost connection). Callers share its result for [`FRESH`]; a caller waits for a
//! sampling in flight at most [`WAIT`], then answers "unknown" and leaves the sampling to
//! finish for the next caller. So the api holds at most one channel for depths, and a stalled
//! broker cannot pile up channels or requests.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use lapin::Channel;
use tasksync_shared::{amqp, topology::Topology};
use tokio::{sync::Mutex, task::JoinHandle};

use super::Broker;

/// How long a sample answers every caller.
const FRESH: Duration = Duration::from_secs(1);
/// Longest a caller waits for a sampling in flight.
const WAIT: Duration = Duration::from_secs(2);
/// Longest one sampling may take; past it the broker is not answering and the channel is
/// given up (its connection's heartbeat ends it, if nothing else does).
const SAMPLING_LIMIT: Duration = Duration::from_secs(30);

/// One durable queue as the broker last reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueDepth {
    pub name: String,
    /// Messages ready for delivery (not those held unacknowledged by a consumer).
    pub ready: u32,
    pub consumers: u32,
}

/// The work queues of a sample, one per partition.
#[derive(Clone, Debug)]
pub struct WorkQueues {
    /// Every partition's work queue, partition 0 first.
    pub partitions: Vec<QueueDepth>,
    /// Ready messages over every partition.
    pub ready: u32,
    /// Ready messages in the deepest partition.
    pub deepest: u32,
    /// Consumers of the least-served partition: 0 when some partition has no worker.
    pub consumers: u32,
}

/// The work queues in `depths`; `None` when one of them is missing from the sample.
pub fn work_queues(topology: &Topology, depths: &[QueueDepth]) -> Option<WorkQueues> {
    let partitions = topology
        .work_queues()
        .into_iter()
        .map(|name| depths.iter().find(|q| q.name == name).cloned())
        .collect::<Option<Vec<_>>>()?;
    Some(WorkQueues {
        ready: partitions.iter().map(|q| q.ready).sum(),
        deepest: partitions.iter().map(|q| q.ready).max().unwrap_or(0),
        consumers: partitions.iter().map(|q| q.consumers).min().unwrap_or(0),
        partitions,
    })
}

/// A sample, or `None` when the broker did not tell.
pub type Depths = Option<Arc<[QueueDepth]>>;

/// What a sampling hands back: the channel to reuse (when still good) and the sample.
type Sampled = (Option<Channel>, Option<Vec<QueueDepth>>);

#[derive(Default)]
pub(super) struct DepthSampler {
    state: Mutex<SamplerState>,
}

#[derive(Default)]
struct SamplerState {
    last: Option<(Instant, Depths)>,
    /// The sampling channel between samplings.
    idle_channel: Option<Channel>,
    in_flight: Option<JoinHandle<Sampled>>,
}

impl Broker {
    /// The depth of each durable queue, at most [`FRESH`] old; `None` when the broker is not
    /// connected or did not answer within [`WAIT`].
    pub async fn queue_depths(&self) -> Depths {
        let mut state = self.inner.depths.state.lock().await;
        if let Some((at, depths)) = &state.last {
            if at.elapsed() < FRESH {
                return depths.clone();
            }
        }
        if state.in_flight.is_none() {
            let channel = state.idle_channel.take();
            let broker = self.clone();
            state.in_flight = Some(tokio::spawn(async move {
                tokio::time::timeout(SAMPLING_LIMIT, broker.sample(channel))
                    .await
                    .unwrap_or((None, None))
            }));
        }
        let depths = match state.in_flight.as_mut() {
            Some(task) => match tokio::time::timeout(WAIT, task).await {
                // Still running: leave it in flight; the next caller waits for it again.
                Err(_) => None,
                Ok(joined) => {
                    state.in_flight = None;
                    let (channel, depths) = joined.unwrap_or((None, None));
                    state.idle_channel = channel;
                    depths.map(Arc::from)
                }
            },
            None => None,
        };
        state.last = Some((Instant::now(), depths.clone()));
        depths
    }

    /// Ready messages in the deepest work queue (partition), from the shared sample
    /// ([`Broker::queue_depths`]); `None` when the broker did not tell.
    pub async fn work_queue_depth(&self) -> Option<u32> {
        let depths = self.queue_depths().await?;
        work_queues(&self.inner.topology, &depths).map(|w| w.deepest)
    }

    /// Reads every durable queue with passive declares on `channel`, or on a new channel of
    /// the current connection when it is gone or broken.
    async fn sample(self, channel: Option<Channel>) -> Sampled {
        let Some(link) = self.link() else {
            return (None, None);
        };
        let channel = match channel {
            Some(channel) if channel.status().connected() => channel,
            _ => match link.connection.create_channel().await {
                Ok(channel) => channel,
                Err(error) => {
                    tracing::debug!(%error, "could not open a channel for queue depths");
                    return (None, None);
                }
            },
        };
        let mut depths = Vec::new();
        for name in self.inner.topology.queues() {
            match amqp::inspect_queue(&channel, &name).await {
                Ok(queue) => depths.push(QueueDepth {
                    name,
                    ready: queue.message_count(),
                    consumers: queue.consumer_count(),
                }),
                // A missing queue closed the channel: the next sampling opens another.
                Err(error) => {
                    tracing::debug!(%error, queue = %name, "could not read a queue's depth");
                    return (None, None);
                }
            }
        }
        (Some(channel), Some(depths))
    }
}
