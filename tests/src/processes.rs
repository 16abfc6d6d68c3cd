//! The api and the sync-worker as real child processes, for tests that signal or kill them.

use std::{
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use tasksync_shared::Settings;

/// Builds the service binaries once per test process and returns their directory. Building
/// here (instead of trusting whatever is in `target/`) means a test never runs stale binaries.
pub fn binaries() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", "api", "-p", "sync-worker"])
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build -p api -p sync-worker failed");
        // target/<profile>/deps/<test binary> → target/<profile>
        let exe = std::env::current_exe().unwrap();
        exe.parent()
            .and_then(|deps| deps.parent())
            .unwrap()
            .to_path_buf()
    })
}

/// A free TCP port on the loopback (the api process binds it right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running service process; killed when dropped.
#[derive(Debug)]
pub struct ServiceProcess {
    child: Child,
    pub log: PathBuf,
}

impl ServiceProcess {
    /// Starts `binary` (`api` or `sync-worker`) configured like `settings`.
    pub fn spawn(binary: &str, settings: &Settings) -> Self {
        Self::spawn_with(binary, settings, &[])
    }

    /// [`Self::spawn`], with `vars` set over the settings' (e.g. `LOG_FORMAT=json`).
    pub fn spawn_with(binary: &str, settings: &Settings, vars: &[(&str, &str)]) -> Self {
        let log = std::env::temp_dir().join(format!(
            "tasksync-{binary}-{}.log",
            uuid::Uuid::new_v4().simple()
        ));
        let file = std::fs::File::create(&log).unwrap();
        let delays: Vec<String> = settings
            .retry_delays
            .iter()
            .map(|d| d.as_millis().to_string())
            .collect();
        let child = Command::new(binaries().join(binary))
            .env("DATABASE_URL", &settings.database_url)
            .env("AMQP_URL", &settings.amqp_url)
            .env("AMQP_PREFIX", &settings.amqp_prefix)
            .env(
                "AMQP_QUEUE_TYPE",
                format!("{:?}", settings.queue_type).to_lowercase(),
            )
            .env("RETRY_DELAYS_MS", delays.join(","))
            .env("WRITE_WAIT_MS", settings.write_wait.as_millis().to_string())
            .env(
                "PUBLISH_TIMEOUT_MS",
                settings.publish_timeout.as_millis().to_string(),
            )
            .env("WORKER_BATCH_SIZE", settings.batch_size.to_string())
            .env(
                "WORKER_BATCHES_IN_FLIGHT",
                settings.batches_in_flight.to_string(),
            )
            .env("AMQP_PREFETCH", settings.prefetch.to_string())
            .env("HOST", "127.0.0.1")
            .env("PORT", settings.port.to_string())
            .env("WORKER_HTTP_PORT", settings.worker_http_port.to_string())
            .env("RUST_LOG", "info")
            .env("RUST_BACKTRACE", "0")
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("start {binary}: {e}"));
        Self { child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(signal)
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} {}", self.pid());
    }

    /// SIGTERM: the graceful stop.
    pub fn terminate(&self) {
        self.signal("-TERM");
    }

    /// SIGKILL: no code of the process runs after it.
    pub fn kill(&mut self) {
        self.signal("-KILL");
        let _ = self.child.wait();
    }

    /// Waits for the process to exit.
    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "process did not exit; log: {}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A service binary started with exactly the variables it is given: nothing inherited from the
/// test's environment, and no `.env` to find (it runs in an empty temporary directory). For
/// tests of configuration, start-up and shutdown; killed when dropped.
#[derive(Debug)]
pub struct BareProcess {
    child: Child,
    dir: PathBuf,
}

impl BareProcess {
    /// Starts `binary` with `vars`; its stdout and stderr go to separate files.
    pub fn spawn(binary: &str, vars: &[(&str, &str)]) -> Self {
        let dir = Self::temp_dir(binary);
        let out = std::fs::File::create(dir.join("stdout")).unwrap();
        let err = std::fs::File::create(dir.join("stderr")).unwrap();
        Self::start(binary, vars, dir, out.into(), err.into())
    }

    /// [`Self::spawn`], with a `.env` file holding `dotenv` in its working directory.
    pub fn spawn_with_dotenv(binary: &str, vars: &[(&str, &str)], dotenv: &str) -> Self {
        let dir = Self::temp_dir(binary);
        std::fs::write(dir.join(".env"), dotenv).unwrap();
        let out = std::fs::File::create(dir.join("stdout")).unwrap();
        let err = std::fs::File::create(dir.join("stderr")).unwrap();
        Self::start(binary, vars, dir, out.into(), err.into())
    }

    /// Starts `binary` with `vars` and its stdout and stderr on pipes, for [`Self::take_pipes`].
    pub fn spawn_piped(binary: &str, vars: &[(&str, &str)]) -> Self {
        let dir = Self::temp_dir(binary);
        Self::start(binary, vars, dir, Stdio::piped(), Stdio::piped())
    }

    fn temp_dir(binary: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "tasksync-bare-{binary}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn start(binary: &str, vars: &[(&str, &str)], dir: PathBuf, out: Stdio, err: Stdio) -> Self {
        // The worker's own listener on a free port unless `vars` says otherwise: its default
        // (3001) would clash between tests running at once.
        let child = Command::new(binaries().join(binary))
            .env_clear()
            .env("WORKER_HTTP_PORT", "0")
            .envs(vars.iter().copied())
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {binary}: {e}"));
        Self { child, dir }
    }

    /// The read ends of the stdout and stderr pipes of a [`Self::spawn_piped`] process.
    pub fn take_pipes(&mut self) -> (std::process::ChildStdout, std::process::ChildStderr) {
        (
            self.child.stdout.take().expect("stdout is not piped"),
            self.child.stderr.take().expect("stderr is not piped"),
        )
    }

    /// SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM {}", self.child.id());
    }

    /// The exit status, or `None` when it is still running after `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until `text` appears in what it wrote to stdout (file output only).
    pub async fn wait_for_stdout(&self, text: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.stdout().contains(text) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.join("stdout")).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
    }
}

impl Drop for BareProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
