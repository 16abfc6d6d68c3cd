//! A private RabbitMQ node for fault tests: its own node name, port, distribution port and data
//! directory, so a test can stop and restart a broker without touching the machine's shared one.
//! Removed when dropped, also when the test fails.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use tokio::net::TcpStream;

/// A running private node.
#[derive(Debug)]
pub struct RabbitNode {
    pub name: String,
    pub port: u16,
    dir: PathBuf,
}

fn rabbitmqctl(node: &str, args: &[&str]) -> std::io::Result<std::process::Output> {
    Command::new("rabbitmqctl")
        .arg("-n")
        .arg(node)
        .args(args)
        .stdin(Stdio::null())
        .output()
}

impl RabbitNode {
    /// Starts a node listening on 127.0.0.1:`port` (below the ephemeral port range, so that an
    /// outgoing connection never holds it) with distribution port `port + 20000`.
    pub async fn start(port: u16) -> Self {
        let name = format!("tasksync-test-{port}@localhost");
        let dir = std::env::temp_dir().join(format!("tasksync-rabbit-{port}"));
        let _ = rabbitmqctl(&name, &["stop"]);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("plugins"), "[].\n").unwrap();
        std::fs::write(
            dir.join("rabbitmq.conf"),
            format!("listeners.tcp.1 = 127.0.0.1:{port}\n"),
        )
        .unwrap();
        // The server drops to the rabbitmq user when started as root.
        let _ = Command::new("chown")
            .args(["-R", "rabbitmq:rabbitmq"])
            .arg(&dir)
            .status();
        let status = Command::new("rabbitmq-server")
            .arg("-detached")
            .env("RABBITMQ_NODENAME", &name)
            .env("RABBITMQ_DIST_PORT", (u32::from(port) + 20000).to_string())
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq.conf"))
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("plugins"))
            .env("RABBITMQ_PID_FILE", dir.join("pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("rabbitmq-server must be installed for the broker fault tests");
        assert!(status.success(), "rabbitmq-server -detached failed");
        let node = Self { name, port, dir };
        node.wait_until_listening(true).await;
        node
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    async fn listening(&self) -> bool {
        TcpStream::connect(("127.0.0.1", self.port)).await.is_ok()
    }

    async fn wait_until_listening(&self, up: bool) {
        let deadline = Instant::now() + Duration::from_secs(90);
        while self.listening().await != up {
            assert!(
                Instant::now() < deadline,
                "node {} did not come {}",
                self.name,
                if up { "up" } else { "down" }
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the broker application (connections drop, the port closes); the data stays.
    pub async fn stop_app(&self) {
        self.ctl("stop_app");
        self.wait_until_listening(false).await;
    }

    /// Starts the broker application again; durable queues and persistent messages come back.
    pub async fn start_app(&self) {
        self.ctl("start_app");
        self.wait_until_listening(true).await;
    }

    /// Runs one `rabbitmqctl` command on this node; fails the test when it fails.
    fn ctl(&self, command: &str) {
        let out = rabbitmqctl(&self.name, &[command]).unwrap();
        assert!(
            out.status.success(),
            "{command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        let _ = rabbitmqctl(&self.name, &["stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
