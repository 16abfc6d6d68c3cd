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

/// What happens to the node under test.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// SIGKILL, then a restart.
    Kill,
    /// Cut from the clients and its peers, then healed.
    Partition,
}

/// On a fresh cluster of `base_port`: a load in flow, `fault` on the node that holds the
/// services' connections and leads a work queue, another node taking the lead, a second load
/// written and applied while the node is away (so the services must have failed over), the node
/// back; then the first load's figures.
async fn under_load(base_port: u16, fault: Fault, name: &str) {
    let cluster = RabbitCluster::start(base_port).await;
    let stack = stack_on(&cluster).await;
    let (node, queue) = busiest_leader(&cluster, &stack).await;

    let load = Load::start(&stack, updates(100), 40).await;
    match fault {
        Fault::Kill => {
            assert!(load.is_running(), "{name}: the load ended before the fault");
            cluster.kill(node).await;
        }
        Fault::Partition => {
            // The clients lose the node first (as `partition` does), then its peers do.
            cluster.proxy(node).cut();
            assert!(load.is_running(), "{name}: the load ended before the fault");
            cluster.partition(node).await;
        }
    }
    stack
        .eventually("another node leads the work queue", || async {
            cluster.leader_of(&queue).await.is_some_and(|l| l != node)
        })
        .await;
    let meanwhile = Load::start(&stack, updates(5), 1).await.finish().await;
    meanwhile
        .verify(&stack.db, &format!("{name}, while the node is away"))
        .await;
    match fault {
        Fault::Kill => cluster.restart(node).await,
        Fault::Partition => cluster.heal(node).await,
    }
    load.finish().await.verify(&stack.db, name).await;
}

#[tokio::test]
async fn killing_the_node_that_leads_a_work_queue_loses_and_doubles_nothing() {
    under_load(
        5750,
        Fault::Kill,
        "cluster: the leader of a work queue killed",
    )
    .await;
}

#[tokio::test]
async fn a_node_partitioned_away_loses_and_doubles_nothing() {
    under_load(5770, Fault::Partition, "cluster: a node partitioned away").await;
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
