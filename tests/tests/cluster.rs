//! The three-node test cluster ([`RabbitCluster`]) does what fault tests rely on: it forms one
//! cluster whose quorum queues span all nodes, a killed leader is replaced without losing a
//! confirmed message, a partitioned node drops out (the majority keeps confirming) and comes
//! back on heal, and a rolling restart keeps a queue available. Each test prints its timings to
//! stderr.
//!
//! Nextest runs these one at a time (`.config/nextest.toml`): three nodes per test are all a
//! small machine takes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties,
    options::{
        BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
        QueueDeleteOptions,
    },
    types::{AMQPValue, FieldTable, LongString},
};
use tasksync_tests::rabbit_cluster::RabbitCluster;
use tokio::net::TcpStream;
use uuid::Uuid;

/// How long one client step (connect, publish with confirms, drain) may take.
const STEP: Duration = Duration::from_secs(20);

const ALL: [usize; 3] = [0, 1, 2];

#[path = "cluster/services.rs"]
mod services;

#[tokio::test]
async fn three_nodes_form_one_cluster_whose_quorum_queues_span_them() {
    let cluster = RabbitCluster::start(5710).await;
    for i in ALL {
        assert_eq!(
            cluster.running_members(i).await,
            Some(ALL.to_vec()),
            "node {i}"
        );
    }
    let urls = cluster.urls();
    assert_eq!(urls.split(',').count(), 3, "{urls}");
    assert!(
        urls.split(',')
            .all(|u| u.starts_with("amqp://guest:guest@127.0.0.1:"))
    );

    let queue = queue_name("forming");
    let channel = open(&cluster.url(0)).await;
    declare_quorum(&channel, &queue).await;
    assert_eq!(cluster.members_of(&queue).await, ALL.to_vec());
    assert!(cluster.leader_of(&queue).await.is_some());

    // Published with confirms through node 1, consumed through node 2 (and node 0 directly).
    let sent = bodies("forming", 0..10);
    publish_confirmed(&cluster.url(1), &queue, &sent).await;
    assert_eq!(drain(&cluster.url(2), &queue).await, sent);
    let more = bodies("forming", 10..12);
    publish_confirmed(&cluster.url(2), &queue, &more).await;
    assert_eq!(drain(&cluster.direct_url(0), &queue).await, more);

    delete(&channel, &queue).await;
}

#[tokio::test]
async fn a_killed_leader_is_replaced_and_no_confirmed_message_is_lost() {
    let cluster = RabbitCluster::start(5720).await;
    let queue = queue_name("kill");
    declare_quorum(&open(&cluster.url(0)).await, &queue).await;
    let before = bodies("kill", 0..200);
    publish_confirmed(&cluster.url(1), &queue, &before).await;
    let leader = cluster.leader_of(&queue).await.expect("a leader");

    let killed = Instant::now();
    cluster.kill(leader).await;
    let new_leader = eventually("a new leader is elected", || async {
        cluster.leader_of(&queue).await.filter(|l| *l != leader)
    })
    .await;
    let elected = killed.elapsed();
    assert_ne!(new_leader, leader);

    // The queue keeps taking confirmed messages without the killed node, and has every one.
    let survivor = (leader + 1) % 3;
    let after = bodies("kill", 200..250);
    publish_confirmed(&cluster.url(survivor), &queue, &after).await;
    let expected: Vec<String> = before.iter().chain(&after).cloned().collect();
    assert_eq!(message_count(&cluster.url(survivor), &queue).await, 250);

    let restarting = Instant::now();
    cluster.restart(leader).await;
    let restarted = restarting.elapsed();
    for i in ALL {
        assert_eq!(
            cluster.running_members(i).await,
            Some(ALL.to_vec()),
            "node {i}"
        );
    }
    assert_eq!(cluster.members_of(&queue).await, ALL.to_vec());
    // Drained through the restarted node: it serves the queue again.
    assert_eq!(drain(&cluster.url(leader), &queue).await, expected);
    eprintln!(
        "kill of leader node {leader}: new leader node {new_leader} after {elected:?}; \
         restart (back in the cluster) took {restarted:?}"
    );
    delete(&open(&cluster.url(survivor)).await, &queue).await;
}

#[tokio::test]
async fn a_partitioned_node_drops_out_and_comes_back_on_heal() {
    let cluster = RabbitCluster::start(5730).await;
    let queue = queue_name("partition");
    declare_quorum(&open(&cluster.url(0)).await, &queue).await;
    let before = bodies("partition", 0..10);
    publish_confirmed(&cluster.url(0), &queue, &before).await;
    // Partition the queue's leader: the majority must elect another and keep confirming.
    let cut = cluster.leader_of(&queue).await.expect("a leader");
    let majority: Vec<usize> = ALL.into_iter().filter(|&j| j != cut).collect();

    let partitioning = Instant::now();
    cluster.partition(cut).await;
    let partitioned = partitioning.elapsed();
    for &j in &majority {
        assert_eq!(
            cluster.running_members(j).await,
            Some(majority.clone()),
            "node {j} sees node {cut} down"
        );
    }
    assert_eq!(
        cluster.running_members(cut).await,
        None,
        "node {cut} paused"
    );
    let direct = TcpStream::connect(("127.0.0.1", port_of(&cluster.direct_url(cut)))).await;
    assert!(direct.is_err(), "the paused node's listener is closed");
    let through_proxy = tokio::time::timeout(
        STEP,
        Connection::connect(&cluster.url(cut), ConnectionProperties::default()),
    )
    .await
    .expect("a cut proxy answers at once");
    assert!(through_proxy.is_err(), "clients cannot reach node {cut}");

    let during = bodies("partition", 10..30);
    let publishing = Instant::now();
    publish_confirmed(&cluster.url(majority[0]), &queue, &during).await;
    let confirmed = publishing.elapsed();
    let leader = cluster.leader_of(&queue).await;
    assert!(
        leader.is_some_and(|l| majority.contains(&l)),
        "the majority leads the queue: {leader:?}"
    );

    let healing = Instant::now();
    cluster.heal(cut).await;
    let healed = healing.elapsed();
    for i in ALL {
        assert_eq!(
            cluster.running_members(i).await,
            Some(ALL.to_vec()),
            "node {i}"
        );
    }
    // Through the healed node's proxy: it serves clients and has every message.
    let expected: Vec<String> = before.iter().chain(&during).cloned().collect();
    assert_eq!(drain(&cluster.url(cut), &queue).await, expected);
    eprintln!(
        "partition of node {cut}: peers saw it down and it paused after {partitioned:?}; \
         20 confirms through the majority took {confirmed:?}; heal took {healed:?}"
    );

    // The same node again (a partition can be repeated), then the others' view once more.
    cluster.partition(cut).await;
    for &j in &majority {
        assert_eq!(cluster.running_members(j).await, Some(majority.clone()));
    }
    cluster.heal(cut).await;
    for i in ALL {
        assert_eq!(
            cluster.running_members(i).await,
            Some(ALL.to_vec()),
            "node {i}"
        );
    }
    delete(&open(&cluster.url(cut)).await, &queue).await;
}

#[tokio::test]
async fn a_rolling_restart_keeps_the_queue_available_and_complete() {
    let cluster = RabbitCluster::start(5740).await;
    let queue = queue_name("rolling");
    declare_quorum(&open(&cluster.url(0)).await, &queue).await;
    let mut expected = bodies("rolling", 0..100);
    publish_confirmed(&cluster.url(0), &queue, &expected).await;

    let mut timings = Vec::new();
    for i in ALL {
        let stopping = Instant::now();
        cluster.stop(i).await;
        let stopped = stopping.elapsed();
        assert_eq!(cluster.running_members(i).await, None, "node {i} stopped");
        let next = (i + 1) % 3;
        let others: Vec<usize> = ALL.into_iter().filter(|&j| j != i).collect();
        assert_eq!(cluster.running_members(next).await, Some(others));
        // Two of three members: the queue still confirms.
        let during = bodies("rolling", 100 + 10 * i..110 + 10 * i);
        publish_confirmed(&cluster.url(next), &queue, &during).await;
        expected.extend(during);
        let starting = Instant::now();
        cluster.start_node(i).await;
        timings.push((stopped, starting.elapsed()));
    }
    for i in ALL {
        assert_eq!(
            cluster.running_members(i).await,
            Some(ALL.to_vec()),
            "node {i}"
        );
    }
    assert_eq!(drain(&cluster.url(2), &queue).await, expected);
    eprintln!("rolling restart, (stop, start) of each node: {timings:?}");
    delete(&open(&cluster.url(0)).await, &queue).await;
}

// ---- helpers ---------------------------------------------------------------------------------

fn queue_name(test: &str) -> String {
    format!(
        "cluster-{test}-{}",
        &Uuid::new_v4().simple().to_string()[..8]
    )
}

fn bodies(test: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|n| format!("{test}-{n:04}")).collect()
}

fn port_of(url: &str) -> u16 {
    let uri: lapin::uri::AMQPUri = url.parse().unwrap();
    uri.authority.port
}

/// Polls `check` (bounded) until it gives a value.
async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: Fn() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A channel on a new connection to `url` (the connection lives as long as the channel).
async fn open(url: &str) -> Channel {
    let connection = tokio::time::timeout(
        STEP,
        Connection::connect(url, ConnectionProperties::default()),
    )
    .await
    .expect("connect in time")
    .expect("connect");
    connection.create_channel().await.unwrap()
}

/// Declares a durable quorum queue placed by the `balanced` leader locator.
async fn declare_quorum(channel: &Channel, queue: &str) {
    let mut args = FieldTable::default();
    let text = |s: &str| AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()));
    args.insert("x-queue-type".into(), text("quorum"));
    args.insert("x-queue-leader-locator".into(), text("balanced"));
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .queue_declare(queue.into(), durable, args)
        .await
        .unwrap();
}

/// Publishes `bodies` persistent and mandatory to `queue` through `url`; every one must be
/// confirmed (acked, routed) within [`STEP`].
async fn publish_confirmed(url: &str, queue: &str, bodies: &[String]) {
    let channel = open(url).await;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let publish = async {
        for body in bodies {
            let confirm = channel
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    body.as_bytes(),
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .unwrap()
                .await
                .unwrap();
            assert!(matches!(confirm, Confirmation::Ack(None)), "{confirm:?}");
        }
    };
    tokio::time::timeout(STEP, publish)
        .await
        .expect("every publish confirmed in time");
}

/// Ready messages in `queue`, as seen through `url`.
async fn message_count(url: &str, queue: &str) -> u32 {
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    open(url)
        .await
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
        .unwrap()
        .message_count()
}

/// Takes every message of `queue` through `url`, in order; fails on a duplicate.
async fn drain(url: &str, queue: &str) -> Vec<String> {
    let channel = open(url).await;
    let take = async {
        let mut got = Vec::new();
        while let Some(message) = channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            got.push(String::from_utf8(message.delivery.data).unwrap());
        }
        got
    };
    let got = tokio::time::timeout(STEP, take)
        .await
        .expect("drained in time");
    let distinct: BTreeSet<&String> = got.iter().collect();
    assert_eq!(distinct.len(), got.len(), "no message twice");
    got
}

async fn delete(channel: &Channel, queue: &str) {
    channel
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await
        .unwrap();
}
