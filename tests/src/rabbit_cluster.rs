//! A private three-node RabbitMQ cluster for fault tests, with a [`FaultyProxy`] in front of
//! each node's AMQP port. The machine's shared broker (and its epmd) is never touched.
//!
//! - **Nodes**: `tasksync-cluster-{port}@localhost` on AMQP ports `base..base+2` (127.0.0.1),
//!   distribution ports `port + 20000`, each with its own config, data, log and pid file under
//!   `$TMPDIR/tasksync-cluster-{base}/{port}/`; light (one scheduler, no plugins).
//! - **Forming**: node 0 boots first as a blank node; then nodes 1 and 2 boot together, with
//!   classic config peer discovery that lists node 0 only, so they always join node 0 (never a
//!   cluster of their own; and never a seed still booting, whose database the feature flags may
//!   not have upgraded yet: that fails the joiner's boot). A node that restarts with its data
//!   dir rejoins from its stored membership. `cluster_partition_handling = pause_minority`.
//! - **Clients** go through the proxies: [`RabbitCluster::urls`] is the comma-separated list
//!   `AMQP_URL` accepts; [`RabbitCluster::direct_url`] bypasses the proxy.
//! - **Kill** ([`RabbitCluster::kill`]): SIGKILL of the node's `beam.smp`. Each node's command
//!   line carries `-tasksync_node <name>` and `-tasksync_owner <pid:start time>` (extra `erl`
//!   flags, which the node ignores), so its process is found in `/proc/*/cmdline` without
//!   trusting a pid file, and nodes left by a killed test process are recognised as orphans.
//! - **Partition** ([`RabbitCluster::partition`]): the node's client proxy is cut, and on the
//!   node itself `erlang:set_cookie(Peer, <wrong>)` for both peers, then
//!   `erlang:disconnect_node(Peer)`. Every distribution handshake between the node and its peers
//!   then fails in both directions (each side checks the other's digest with the cookie it
//!   holds for that node), exactly like an unreachable network, while `rabbitmqctl` (which
//!   connects as a fresh hidden node with the real cookie) keeps working on all three, so the
//!   test can watch and heal. The peers see the node down at once and keep quorum; the node
//!   sees itself in the minority and pauses (its AMQP listener closes). Heal
//!   ([`RabbitCluster::heal`]) puts the real cookie back and pings the peers; the paused node's
//!   recovery loop reconnects and restarts RabbitMQ. `net_kernel:allow/1` was not used: its
//!   list can only grow (no second partition), and it would also shut out the CLI's
//!   random node names. A real network cut of the distribution links (proxies per node pair)
//!   would need per-node name resolution and epmd tricks; the cookie cut gives RabbitMQ the same
//!   view (connection lost, reconnects refused) without them.
//! - **Drop**: cuts the proxies, SIGKILLs the three nodes (their data is thrown away, so there
//!   is nothing to stop gracefully) and removes the directory, also when the test panicked
//!   (then it first prints the end of each node's log).
//!   Every start first removes what a killed earlier run left under the same names, and any
//!   cluster node whose owning test process is gone. A lock file per base port
//!   (`$TMPDIR/tasksync-cluster-{base}.lock`, naming its live owner) makes a second test process
//!   that wants the same ports (another checkout's run) wait for the first instead of killing
//!   its nodes.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use tokio::net::TcpStream;

use crate::proxy::FaultyProxy;

/// Nodes in a cluster.
pub const SIZE: usize = 3;

/// Longest wait for a node to boot (or to stop).
const NODE_PATIENCE: Duration = Duration::from_secs(90);

/// Longest wait for the cluster to agree on its members after a change.
const MEMBERSHIP_PATIENCE: Duration = Duration::from_secs(60);

/// Scheduler limits that keep three nodes light on a small machine.
const ERL_ARGS: &str = "+S 1:1 +SDcpu 1:1 +SDio 2";

/// Whether RabbitMQ and its database run on a node: `{false,no}` once it has paused.
const PAUSED_PROBE: &str = "{rabbit:is_running(), mnesia:system_info(is_running)}.";

/// What node `i` holds for its peers while partitioned.
const WRONG_COOKIE: &str = "tasksync_cluster_partitioned";

/// One node of the cluster.
#[derive(Debug)]
struct Node {
    name: String,
    port: u16,
    dir: PathBuf,
}

/// A running three-node cluster behind three proxies.
#[derive(Debug)]
pub struct RabbitCluster {
    nodes: Vec<Node>,
    proxies: Vec<FaultyProxy>,
    dir: PathBuf,
    /// Held while the cluster lives: another test process (another checkout's run, say) that
    /// wants the same ports waits instead of killing these nodes as leftovers.
    lock: PathBuf,
    owner: String,
}

impl RabbitCluster {
    /// Starts three nodes on AMQP ports `base_port..base_port + 2` (keep them below the
    /// ephemeral range, and `base_port + 20002` free for distribution), forms them into one
    /// cluster and puts a proxy in front of each. Returns when every node reports all three as
    /// running members.
    pub async fn start(base_port: u16) -> Self {
        let started = Instant::now();
        let dir = std::env::temp_dir().join(format!("tasksync-cluster-{base_port}"));
        let nodes: Vec<Node> = (0..SIZE as u16)
            .map(|i| {
                let port = base_port + i;
                Node {
                    name: format!("tasksync-cluster-{port}@localhost"),
                    port,
                    dir: dir.join(port.to_string()),
                }
            })
            .collect();
        let owner = own_identity();
        let lock = std::env::temp_dir().join(format!("tasksync-cluster-{base_port}.lock"));
        blocking({
            let (lock, owner) = (lock.clone(), owner.clone());
            move || acquire(&lock, &owner, LOCK_PATIENCE)
        })
        .await;
        let locked = started.elapsed();
        if locked > Duration::from_secs(1) {
            eprintln!("cluster {base_port}: waited {locked:?} for another process's cluster");
        }
        let started = Instant::now();
        blocking(sweep_orphans).await;
        let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
        blocking(move || {
            kill_and_reap(&names, NODE_PATIENCE);
            stop_registered(&names);
        })
        .await;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("owner"), &owner).unwrap();
        for (i, node) in nodes.iter().enumerate() {
            write_node_files(node, (i > 0).then_some(nodes[0].name.as_str()));
        }
        // The server drops to the rabbitmq user when started as root.
        let _ = Command::new("chown")
            .args(["-R", "rabbitmq:rabbitmq"])
            .arg(&dir)
            .status();
        let mut cluster = Self {
            nodes,
            proxies: Vec::new(),
            dir,
            lock,
            owner,
        };
        for i in 0..SIZE {
            let target = ([127, 0, 0, 1], cluster.nodes[i].port).into();
            cluster.proxies.push(FaultyProxy::start(target).await);
        }
        // The seed boots alone: a node that joins one still booting can catch its database
        // before the feature flags have upgraded it, and then fails its own boot
        // (schema_integrity_check_failed). The two others then boot together and join it.
        cluster.boot(&[0]).await;
        let seeded = started.elapsed();
        cluster.boot(&[1, 2]).await;
        let booted = started.elapsed();
        cluster
            .wait_for_members("the cluster forms", |_, members| {
                members == Some((0..SIZE).collect())
            })
            .await;
        eprintln!(
            "cluster {base_port}: seed listening after {seeded:?}, all three after {booted:?}, \
             one cluster after {:?}",
            started.elapsed()
        );
        cluster
    }

    /// The proxied URLs of all nodes, comma-separated (what `AMQP_URL` accepts).
    pub fn urls(&self) -> String {
        (0..SIZE).map(|i| self.url(i)).collect::<Vec<_>>().join(",")
    }

    /// The URL of node `i` through its proxy.
    pub fn url(&self, i: usize) -> String {
        amqp_url(self.proxies[i].port)
    }

    /// The URL of node `i` without the proxy.
    pub fn direct_url(&self, i: usize) -> String {
        amqp_url(self.nodes[i].port)
    }

    /// The proxy in front of node `i`, for faults of the client path alone.
    pub fn proxy(&self, i: usize) -> &FaultyProxy {
        &self.proxies[i]
    }

    /// The Erlang node name of node `i`.
    pub fn node_name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// The nodes that node `i` reports as running members, sorted; `None` when node `i` does
    /// not answer or its RabbitMQ is not running (stopped, killed or paused).
    pub async fn running_members(&self, i: usize) -> Option<Vec<usize>> {
        let out = self
            .ctl(i, "rabbitmqctl", &["cluster_status", "--formatter", "json"])
            .await
            .ok()?;
        let status: Value = serde_json::from_str(&out).ok()?;
        let members: BTreeSet<usize> = status["running_nodes"]
            .as_array()?
            .iter()
            .filter_map(|n| self.index_of(n.as_str()?))
            .collect();
        Some(members.into_iter().collect())
    }

    /// Which node leads quorum queue `queue` (in vhost `/`), as the first node whose listener
    /// is up reports it; `None` when no node answers or no member is leader.
    pub async fn leader_of(&self, queue: &str) -> Option<usize> {
        let status = self.quorum_status(queue).await?;
        let leaders: Vec<usize> = status
            .iter()
            .filter(|(_, state)| state == "leader")
            .map(|(i, _)| *i)
            .collect();
        match leaders[..] {
            [leader] => Some(leader),
            _ => None,
        }
    }

    /// The nodes holding a member of quorum queue `queue`, sorted (as [`Self::leader_of`]).
    pub async fn members_of(&self, queue: &str) -> Vec<usize> {
        let status = self.quorum_status(queue).await.unwrap_or_default();
        let members: BTreeSet<usize> = status.into_iter().map(|(i, _)| i).collect();
        members.into_iter().collect()
    }

    /// (node, raft state) of each member of `queue`, from the first node listening that answers.
    async fn quorum_status(&self, queue: &str) -> Option<Vec<(usize, String)>> {
        for i in 0..SIZE {
            if !self.listening(i).await {
                continue;
            }
            let args = ["quorum_status", queue, "--formatter", "json"];
            let Ok(out) = self.ctl(i, "rabbitmq-queues", &args).await else {
                continue;
            };
            let Ok(Value::Array(members)) = serde_json::from_str(&out) else {
                continue;
            };
            let status = members
                .iter()
                .filter_map(|m| {
                    let node = self.index_of(m["Node Name"].as_str()?)?;
                    // A member on a node that is down has a list here, e.g. [nodedown, Node].
                    let state = m["Raft State"].as_str().unwrap_or("down").to_string();
                    Some((node, state))
                })
                .collect();
            return Some(status);
        }
        None
    }

    /// SIGKILLs node `i` (its `beam.smp`) and waits until its port is closed.
    pub async fn kill(&self, i: usize) {
        let name = self.nodes[i].name.clone();
        let pids = blocking({
            let name = name.clone();
            move || beam_pids(|args| has_flag(args, "-tasksync_node", &name))
        })
        .await;
        assert!(!pids.is_empty(), "no process of node {name}");
        blocking(move || kill_and_reap(&[name], NODE_PATIENCE)).await;
        self.wait_until_listening(i, false).await;
    }

    /// Starts node `i` again after [`Self::kill`] or [`Self::stop`], with the same directories,
    /// and waits until it listens and every running node counts it as a running member.
    pub async fn restart(&self, i: usize) {
        self.boot(&[i]).await;
        self.wait_for_members("the node is back in the cluster", |j, members| {
            // A peer that is down (a rolling restart) has no say; every running node counts i.
            (j != i && members.is_none()) || members.is_some_and(|m| m.contains(&i))
        })
        .await;
    }

    /// Stops node `i` gracefully (`rabbitmqctl stop`) and waits until its process is gone.
    pub async fn stop(&self, i: usize) {
        self.ctl(i, "rabbitmqctl", &["stop"])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let name = self.nodes[i].name.clone();
        let gone = blocking(move || wait_gone(&name, NODE_PATIENCE)).await;
        assert!(gone, "node {} did not stop", self.nodes[i].name);
        self.wait_until_listening(i, false).await;
    }

    /// Starts node `i` after [`Self::stop`]; see [`Self::restart`].
    pub async fn start_node(&self, i: usize) {
        self.restart(i).await;
    }

    /// Partitions node `i` from its two peers and from the clients (see the module doc), and
    /// waits until both peers report it not running and it has paused (listener closed).
    pub async fn partition(&self, i: usize) {
        self.proxies[i].cut();
        let peers = self.peer_list(i);
        let cut = format!(
            "Peers = {peers}, \
             [erlang:set_cookie(P, '{WRONG_COOKIE}') || P <- Peers], \
             [erlang:disconnect_node(P) || P <- Peers], ok."
        );
        self.ctl(i, "rabbitmqctl", &["eval", &cut])
            .await
            .unwrap_or_else(|e| panic!("partition {i}: {e}"));
        self.wait_for_members("the peers see the node down", |j, members| {
            j == i || members.is_some_and(|m| !m.contains(&i) && m.len() == SIZE - 1)
        })
        .await;
        self.wait_until_listening(i, false).await;
        // Fully paused (RabbitMQ and its database stopped), so that a heal right away meets a
        // node that rejoins rather than one still stopping.
        let deadline = Instant::now() + MEMBERSHIP_PATIENCE;
        loop {
            let state = self
                .ctl(i, "rabbitmqctl", &["eval", PAUSED_PROBE])
                .await
                .unwrap_or_default();
            if state.trim() == "{false,no}" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {i} did not pause: {{rabbit running, mnesia running}} = {}",
                state.trim()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Ends [`Self::partition`] of node `i` and waits until all three nodes are running members
    /// again and node `i` listens.
    pub async fn heal(&self, i: usize) {
        let peers = self.peer_list(i);
        let heal = format!(
            "Peers = {peers}, \
             [erlang:set_cookie(P, erlang:get_cookie()) || P <- Peers], \
             [net_adm:ping(P) || P <- Peers], ok."
        );
        self.ctl(i, "rabbitmqctl", &["eval", &heal])
            .await
            .unwrap_or_else(|e| panic!("heal {i}: {e}"));
        self.proxies[i].restore();
        self.wait_until_listening(i, true).await;
        self.wait_for_members("the partition heals", |_, members| {
            members == Some((0..SIZE).collect())
        })
        .await;
    }

    // ---- internals -------------------------------------------------------------------------

    /// The Erlang list of node `i`'s peers.
    fn peer_list(&self, i: usize) -> String {
        let peers: Vec<String> = (0..SIZE)
            .filter(|&j| j != i)
            .map(|j| format!("'{}'", self.nodes[j].name))
            .collect();
        format!("[{}]", peers.join(", "))
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Starts `nodes` in parallel and waits until each listens.
    async fn boot(&self, nodes: &[usize]) {
        let launches: Vec<_> = nodes.iter().map(|&i| self.launch(i)).collect();
        for launch in launches {
            let status = blocking(move || launch.and_then(|mut child| child.wait())).await;
            assert!(
                status.is_ok_and(|s| s.success()),
                "rabbitmq-server -detached failed"
            );
        }
        for &i in nodes {
            self.wait_until_listening(i, true).await;
        }
    }

    /// Spawns `rabbitmq-server -detached` for node `i` (it returns once the node is forked).
    fn launch(&self, i: usize) -> std::io::Result<std::process::Child> {
        let node = &self.nodes[i];
        let dir = &node.dir;
        let marks = format!(
            "{ERL_ARGS} -tasksync_node {} -tasksync_owner {}",
            node.name, self.owner
        );
        Command::new("rabbitmq-server")
            .arg("-detached")
            .env("RABBITMQ_NODENAME", &node.name)
            .env(
                "RABBITMQ_DIST_PORT",
                (u32::from(node.port) + 20000).to_string(),
            )
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq.conf"))
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("plugins"))
            .env("RABBITMQ_PID_FILE", dir.join("pid"))
            .env("RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS", marks)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
    }

    /// Runs a RabbitMQ CLI `tool` against node `i`; its stdout, or why it failed.
    async fn ctl(&self, i: usize, tool: &'static str, args: &[&str]) -> Result<String, String> {
        let node = self.nodes[i].name.clone();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        blocking(move || cli(tool, &node, &args)).await
    }

    async fn listening(&self, i: usize) -> bool {
        TcpStream::connect(("127.0.0.1", self.nodes[i].port))
            .await
            .is_ok()
    }

    async fn wait_until_listening(&self, i: usize, up: bool) {
        let deadline = Instant::now() + NODE_PATIENCE;
        while self.listening(i).await != up {
            assert!(
                Instant::now() < deadline,
                "node {} did not come {}",
                self.nodes[i].name,
                if up { "up" } else { "down" }
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls every node's running members (in parallel) until `holds(i, members)` for each node
    /// `i`, failing the test after [`MEMBERSHIP_PATIENCE`].
    async fn wait_for_members(
        &self,
        what: &str,
        holds: impl Fn(usize, Option<Vec<usize>>) -> bool,
    ) {
        let deadline = Instant::now() + MEMBERSHIP_PATIENCE;
        loop {
            let views =
                futures_util::future::join_all((0..SIZE).map(|i| self.running_members(i))).await;
            if views.iter().enumerate().all(|(i, m)| holds(i, m.clone())) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting until {what}: running members as each node sees them: {views:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for RabbitCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for node in &self.nodes {
                print_log_tail(node);
            }
        }
        for proxy in &self.proxies {
            proxy.cut();
        }
        self.proxies.clear();
        let names: Vec<String> = self.nodes.iter().map(|n| n.name.clone()).collect();
        kill_and_reap(&names, Duration::from_secs(15));
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_file(&self.lock);
    }
}

/// Longest wait for another process's cluster on the same ports to end.
const LOCK_PATIENCE: Duration = Duration::from_secs(10 * 60);

/// Takes the lock file `path` for `owner` (created exclusively, holding the owner's identity),
/// waiting while a live process holds it and taking over from a dead one.
fn acquire(path: &Path, owner: &str, patience: Duration) {
    let deadline = Instant::now() + patience;
    loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
        {
            Ok(mut file) => {
                std::io::Write::write_all(&mut file, owner.as_bytes()).unwrap();
                return;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => panic!("lock {}: {e}", path.display()),
        }
        let holder = std::fs::read_to_string(path).unwrap_or_default();
        // Empty: its holder is writing it now, or died right after creating it.
        let abandoned = if holder.trim().is_empty() {
            std::fs::metadata(path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|at| at.elapsed().ok())
                .is_some_and(|age| age > Duration::from_secs(10))
        } else {
            !is_alive(holder.trim())
        };
        if abandoned {
            let _ = std::fs::remove_file(path);
            continue;
        }
        assert!(
            Instant::now() < deadline,
            "{} is still held by process {} after {patience:?}",
            path.display(),
            holder.trim()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Lines of a node's log shown when a test fails.
const LOG_TAIL: usize = 40;

/// Prints the last [`LOG_TAIL`] lines of a node's log to stderr (for a failed test's output).
fn print_log_tail(node: &Node) {
    let log = node.dir.join("log").join(format!("{}.log", node.name));
    let Ok(text) = std::fs::read_to_string(&log) else {
        return;
    };
    let lines: Vec<&str> = text.lines().collect();
    eprintln!("---- last lines of {} ----", log.display());
    for line in &lines[lines.len().saturating_sub(LOG_TAIL)..] {
        eprintln!("{line}");
    }
}

fn amqp_url(port: u16) -> String {
    format!("amqp://guest:guest@127.0.0.1:{port}/%2f")
}

/// Writes a node's config and plugin files; nodes other than the first discover `seed`.
fn write_node_files(node: &Node, seed: Option<&str>) {
    std::fs::create_dir_all(&node.dir).unwrap();
    std::fs::write(node.dir.join("plugins"), "[].\n").unwrap();
    let mut config = format!(
        "listeners.tcp.1 = 127.0.0.1:{}\ncluster_partition_handling = pause_minority\n",
        node.port
    );
    if let Some(seed) = seed {
        // Retried every 250 ms for a minute (the seed is up already; this only rides out a
        // slow moment), so a joining node never gives up and starts a cluster of its own.
        config.push_str(&format!(
            "cluster_formation.peer_discovery_backend = classic_config\n\
             cluster_formation.classic_config.nodes.1 = {seed}\n\
             cluster_formation.discovery_retry_limit = 240\n\
             cluster_formation.discovery_retry_interval = 250\n"
        ));
    }
    std::fs::write(node.dir.join("rabbitmq.conf"), config).unwrap();
}

/// Runs a blocking closure off the async runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// `tool -n node -q -t 15 args…`: its stdout, or why it failed.
fn cli(tool: &str, node: &str, args: &[String]) -> Result<String, String> {
    let mut command = Command::new(tool);
    command.args(["-n", node, "-q"]);
    // `stop` waits for the node; everything else is bounded.
    if args.first().is_some_and(|a| a != "stop") {
        command.args(["-t", "15"]);
    }
    let out = command
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{tool}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{tool} -n {node} {}: {}",
            args.first().map_or("", String::as_str),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// This test process as `pid:start time` (the start time tells a reused pid apart).
fn own_identity() -> String {
    let pid = std::process::id();
    format!("{pid}:{}", start_time(pid).unwrap_or_default())
}

/// A process's start time (clock ticks since boot), field 22 of `/proc/<pid>/stat`.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after_name) = stat.rsplit_once(')')?;
    after_name.split_whitespace().nth(19)?.parse().ok()
}

fn is_alive(identity: &str) -> bool {
    let Some((pid, started)) = identity.split_once(':') else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    start_time(pid).is_some_and(|t| t.to_string() == started)
}

/// The command line of process `pid`, split into arguments.
fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

fn has_flag(args: &[String], flag: &str, value: &str) -> bool {
    flag_value(args, flag) == Some(value)
}

fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.windows(2)
        .find(|w| w[0] == flag)
        .map(|w| w[1].as_str())
}

/// Pids of `beam.smp` processes whose command line satisfies `wanted`.
fn beam_pids(wanted: impl Fn(&[String]) -> bool) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == "beam.smp")
        })
        .filter(|&pid| cmdline(pid).is_some_and(|args| wanted(&args)))
        .collect()
}

/// SIGKILLs every process of the named nodes and waits (up to `patience`) until they are gone.
fn kill_and_reap(names: &[String], patience: Duration) {
    let pids = beam_pids(|args| {
        flag_value(args, "-tasksync_node").is_some_and(|n| names.iter().any(|m| m == n))
    });
    signal_kill(&pids);
    let deadline = Instant::now() + patience;
    while pids
        .iter()
        .any(|pid| Path::new(&format!("/proc/{pid}")).exists())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal_kill(pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg("-9")
        .args(pids.iter().map(u32::to_string))
        .stderr(Stdio::null())
        .status();
}

/// Stops, through `rabbitmqctl`, those of the named nodes that epmd still knows: a node of that
/// name that this module did not start (it carries no `-tasksync_node` mark).
fn stop_registered(names: &[String]) {
    let Ok(out) = Command::new("epmd").arg("-names").output() else {
        return;
    };
    let registered = String::from_utf8_lossy(&out.stdout).into_owned();
    for name in names {
        let short = name.split('@').next().unwrap_or(name);
        if registered.contains(&format!("name {short} at port")) {
            let _ = cli("rabbitmqctl", name, &["stop".to_string()]);
        }
    }
}

/// Waits until no process of node `name` is left.
fn wait_gone(name: &str, patience: Duration) -> bool {
    let deadline = Instant::now() + patience;
    loop {
        if beam_pids(|args| has_flag(args, "-tasksync_node", name)).is_empty() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills cluster nodes whose owning test process is gone, and removes the cluster directories
/// whose owner is gone (a test process killed before its `Drop` ran) unless a live process
/// holds their ports' lock.
fn sweep_orphans() {
    let orphans =
        beam_pids(|args| flag_value(args, "-tasksync_owner").is_some_and(|owner| !is_alive(owner)));
    signal_kill(&orphans);
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let is_cluster_dir = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with("tasksync-cluster-"));
        if !is_cluster_dir {
            continue;
        }
        let path = entry.path();
        // Lock files are left to [`acquire`], which takes over from a dead owner.
        if path.extension().is_some_and(|e| e == "lock") {
            continue;
        }
        let owner_of = |file: PathBuf| std::fs::read_to_string(file).ok();
        let gone = |owner: &Option<String>| {
            owner
                .as_deref()
                .map(str::trim)
                .is_some_and(|o| !o.is_empty() && !is_alive(o))
        };
        let (owner, lock) = (
            owner_of(path.join("owner")),
            owner_of(path.with_extension("lock")),
        );
        if gone(&owner) && (lock.is_none() || gone(&lock)) {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}
