//! The services on a three-node RabbitMQ cluster, under load, through the faults a cluster
//! lives with: the node leading a work queue killed, a rolling restart of every node, a node
//! partitioned away. The stack (api and worker) reaches the nodes through proxies with the
//! three URLs in `AMQP_URL` and `WORK_PARTITIONS=3`; the load driver's figures (sent,
//! acknowledged, applied, lost, duplicated) go to stderr and into the README's Guarantees.

use std::time::Duration;

use tasksync_tests::{
    TestStack,
    load::{Load, Mode, Spec},
    rabbit_cluster::RabbitCluster,
};

/// Four devices updating their own tasks, `writes` times each.
fn updates(writes: usize) -> Spec {
    Spec {
        devices: 4,
        writes_per_device: writes,
        mode: Mode::CreateAndUpdate,
    }
}

/// An api and a worker on `cluster`, the work in three partitions.
async fn stack_on(cluster: &RabbitCluster) -> TestStack {
    let stack = TestStack::start_with(|s| {
        s.amqp_url = cluster.urls().into();
        s.work_partitions = 3;
        s.publish_timeout = Duration::from_secs(2);
    })
    .await;
    // Every partition's queue has three members, and each is led by its own node (the work
    // queues are declared before anything else, beyond partition 0 with the balanced leader
    // locator).
    let mut leaders = Vec::new();
    for queue in stack.topology().work_queues() {
        assert_eq!(cluster.members_of(&queue).await, [0, 1, 2], "{queue}");
        leaders.push(cluster.leader_of(&queue).await.expect("a leader"));
    }
    leaders.sort_unstable();
    leaders.dedup();
    assert_eq!(leaders, [0, 1, 2], "the work queues' leaders");
    stack
}

/// The node the services' connections are on (the most of them) and the work queue it leads: a
/// fault there hits the clients and a queue leader at once.
async fn busiest_leader(cluster: &RabbitCluster, stack: &TestStack) -> (usize, String) {
    let node = (0..3)
        .max_by_key(|i| cluster.proxy(*i).open_connections())
        .unwrap();
    let open: Vec<usize> = (0..3)
        .map(|i| cluster.proxy(i).open_connections())
        .collect();
    assert!(open[node] > 0, "connections through the proxies: {open:?}");
    for queue in stack.topology().work_queues() {
        if cluster.leader_of(&queue).await == Some(node) {
            return (node, queue);
        }
    }
    panic!("node {node}, which the services are connected to, leads no work queue");
}

#[tokio::test]
async fn killing_the_node_that_leads_a_work_queue_loses_and_doubles_nothing() {
    let cluster = RabbitCluster::start(5750).await;
    let stack = stack_on(&cluster).await;
    let (leader, queue) = busiest_leader(&cluster, &stack).await;

    let load = Load::start(&stack, updates(100), 40).await;
    assert!(load.is_running(), "the load ended before the kill");
    cluster.kill(leader).await;
    stack
        .eventually("another node leads the work queue", || async {
            cluster.leader_of(&queue).await.is_some_and(|l| l != leader)
        })
        .await;
    // The services failed over: writes go through and are applied while the node is down.
    let meanwhile = Load::start(&stack, updates(5), 1).await.finish().await;
    meanwhile
        .verify(&stack.db, "cluster: while the killed node is down")
        .await;
    cluster.restart(leader).await;
    let ledger = load.finish().await;
    ledger
        .verify(&stack.db, "cluster: the leader of a work queue killed")
        .await;
}

#[tokio::test]
async fn a_rolling_restart_of_every_node_loses_and_doubles_nothing() {
    let cluster = RabbitCluster::start(5760).await;
    let stack = stack_on(&cluster).await;
    for node in 0..3 {
        // A load in full flow across each node's stop and start.
        let load = Load::start(&stack, updates(150), 20).await;
        cluster.stop(node).await;
        assert!(
            load.is_running(),
            "the load ended before node {node} stopped"
        );
        cluster.start_node(node).await;
        let ledger = load.finish().await;
        ledger
            .verify(&stack.db, &format!("cluster: rolling restart, node {node}"))
            .await;
    }
}

#[tokio::test]
async fn a_node_partitioned_away_loses_and_doubles_nothing() {
    let cluster = RabbitCluster::start(5770).await;
    let stack = stack_on(&cluster).await;
    let (leader, queue) = busiest_leader(&cluster, &stack).await;

    let load = Load::start(&stack, updates(100), 40).await;
    // The clients lose the node first (as `partition` does), then its peers do.
    cluster.proxy(leader).cut();
    assert!(load.is_running(), "the load ended before the partition");
    cluster.partition(leader).await;
    stack
        .eventually("the majority elects another leader", || async {
            cluster.leader_of(&queue).await.is_some_and(|l| l != leader)
        })
        .await;
    // Writes still go through the majority while the node is away.
    let during = Load::start(&stack, updates(5), 1).await.finish().await;
    during
        .verify(&stack.db, "cluster: during a partition")
        .await;
    cluster.heal(leader).await;
    let ledger = load.finish().await;
    ledger
        .verify(&stack.db, "cluster: a node partitioned away")
        .await;
}
