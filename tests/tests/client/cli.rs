//! The `tasks` binary, run as a user would, its `--json` output parsed.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use serde_json::Value;
use tasksync_tests::TestStack;

use super::{server_shown, shown};

/// Builds the `tasks` binary once per test process and returns its path (the test binary is
/// target/<profile>/deps/<name>; the binary lands in target/<profile>).
fn tasks_binary() -> &'static PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "--quiet",
                "-p",
                "tasksync-client",
                "--bin",
                "tasks",
            ])
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build -p tasksync-client failed");
        let exe = std::env::current_exe().unwrap();
        exe.parent()
            .and_then(|deps| deps.parent())
            .unwrap()
            .join("tasks")
    })
}

/// One user's `tasks`: its own database and config directories, pointed at `url`.
struct Tasks {
    home: tempfile::TempDir,
    url: String,
}

/// What a run printed and how it ended.
#[derive(Debug)]
struct Run {
    ok: bool,
    lines: Vec<Value>,
}

impl Run {
    fn json(&self) -> &Value {
        assert_eq!(self.lines.len(), 1, "{self:?}");
        &self.lines[0]
    }
}

impl Tasks {
    fn new(url: &str) -> Self {
        Self {
            home: tempfile::tempdir().unwrap(),
            url: url.into(),
        }
    }

    fn db(&self) -> PathBuf {
        self.home.path().join("data/tasks.db")
    }

    /// Runs `tasks --json ARGS` off the runtime (the api serves from the test's runtime).
    async fn run(&self, args: &[&str]) -> Run {
        let home: &Path = self.home.path();
        let mut command = Command::new(tasks_binary());
        command
            .arg("--json")
            .args(args)
            .env_clear()
            .env("HOME", home)
            .env("XDG_CONFIG_HOME", home.join("config"))
            .env("XDG_DATA_HOME", home.join("data-home"))
            .env("TASKS_DB", self.db())
            .env("TASKS_URL", &self.url);
        let output = tokio::task::spawn_blocking(move || command.output())
            .await
            .unwrap()
            .unwrap();
        let stdout = String::from_utf8(output.stdout).unwrap();
        let lines = stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
            .collect();
        Run {
            ok: output.status.success(),
            lines,
        }
    }

    async fn ok(&self, args: &[&str]) -> Value {
        let run = self.run(args).await;
        assert!(run.ok, "tasks {args:?}: {run:?}");
        run.json().clone()
    }
}

#[tokio::test]
async fn every_command_answers_json_offline_and_sync_reaches_the_server() {
    let stack = TestStack::start().await;
    let phone = Tasks::new(&stack.base);

    let added = phone
        .ok(&["add", "buy milk", "--description", "2 litres"])
        .await;
    assert_eq!(added["title"], "buy milk");
    assert_eq!(added["description"], "2 litres");
    assert_eq!(added["sync_status"], "pending");
    let id = added["id"].as_str().unwrap().to_string();
    let prefix = &id[..8];
    let other = phone.ok(&["add", "call mum"]).await;

    let done = phone.ok(&["done", prefix]).await;
    assert_eq!(done["completed"], true);
    let edited = phone
        .ok(&[
            "edit",
            prefix,
            "--title",
            "buy oat milk",
            "--clear-description",
        ])
        .await;
    assert_eq!(edited["title"], "buy oat milk");
    assert!(edited["description"].is_null());
    let shown_one = phone.ok(&["show", &id]).await;
    assert_eq!(shown_one, edited);
    let removed = phone.ok(&["rm", other["id"].as_str().unwrap()]).await;
    assert_eq!(removed["is_deleted"], true);
    let list = phone.ok(&["list"]).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(
        phone.ok(&["list", "--all"]).await.as_array().unwrap().len(),
        2
    );

    let status = phone.ok(&["status"]).await;
    assert_eq!(status["queue"]["queued"], 5);
    assert!(status["last_sync_at"].is_null());
    assert!(status["device_id"].as_str().is_some());

    let missing = phone.run(&["show", "ffffffff"]).await;
    assert!(!missing.ok);
    assert!(
        missing.json()["error"]
            .as_str()
            .unwrap()
            .contains("no task"),
        "{missing:?}"
    );
    let invalid = phone.run(&["add", "   "]).await;
    assert!(!invalid.ok);
    assert!(
        invalid.json()["error"]
            .as_str()
            .unwrap()
            .starts_with("title:")
    );

    let report = phone.ok(&["sync"]).await;
    assert_eq!(report["pushed"], 5, "{report}");
    assert_eq!(report["outcomes"]["success"], 5, "{report}");
    assert_eq!(report["queued"], 0);
    let status = phone.ok(&["status"]).await;
    assert_eq!(status["queue"]["queued"], 0);
    assert!(status["last_sync_at"].is_string());

    // A second device pulls it all, watching: the server's event stream wakes it (a change, or
    // the interval, whichever comes first).
    stack.feed_caught_up().await;
    let laptop = Tasks::new(&stack.base);
    let watch = laptop
        .run(&["sync", "--watch", "--rounds", "2", "--interval", "1"])
        .await;
    assert!(watch.ok, "{watch:?}");
    assert_eq!(watch.lines.len(), 2, "{watch:?}");
    for (i, round) in watch.lines.iter().enumerate() {
        assert_eq!(round["round"], i as u64 + 1);
        assert_eq!(round["wake"], "events", "{round}");
        assert!(round["report"].is_object(), "{round}");
    }
    assert_eq!(watch.lines[0]["report"]["pulled"], 2);
    let laptop_tasks: Vec<tasksync_shared::Task> =
        serde_json::from_value(laptop.ok(&["list", "--all"]).await).unwrap();
    assert_eq!(shown(&laptop_tasks), server_shown(&stack).await);
}

#[tokio::test]
async fn sync_without_a_server_fails_with_a_json_error_and_keeps_the_queue() {
    let port = tasksync_tests::processes::free_port();
    let phone = Tasks::new(&format!("http://127.0.0.1:{port}"));
    phone.ok(&["add", "offline"]).await;
    let run = phone.run(&["sync", "--attempts", "1"]).await;
    assert!(!run.ok);
    let error = run.json()["error"].as_str().unwrap();
    assert!(error.contains("unreachable"), "{error}");
    assert_eq!(phone.ok(&["status"]).await["queue"]["queued"], 1);
}

#[tokio::test]
async fn a_sync_killed_mid_push_is_finished_by_the_next_with_every_operation_applied_once() {
    const TASKS: usize = 600;
    let stack = TestStack::start().await;
    let phone = Tasks::new(&stack.base);
    std::fs::create_dir_all(phone.db().parent().unwrap()).unwrap();
    let mut store = tasksync_client::Store::open(&phone.db()).unwrap();
    for i in 0..TASKS {
        store
            .add(tasksync_client::NewTask {
                title: format!("task {i}"),
                ..Default::default()
            })
            .unwrap();
    }
    let queued = |store: &tasksync_client::Store| -> Vec<uuid::Uuid> {
        store
            .queue(tasksync_client::store::QueueState::Queued)
            .unwrap()
            .iter()
            .map(|op| op.op_id)
            .collect()
    };
    let ops = queued(&store);

    let mut child = Command::new(tasks_binary())
        .args(["--json", "sync", "--batch-size", "50"])
        .env("TASKS_DB", phone.db())
        .env("TASKS_URL", &stack.base)
        .env("XDG_CONFIG_HOME", phone.home.path().join("config"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once some answers are stored and the server has applied more than that.
    let mut killed = false;
    for _ in 0..5_000 {
        let recorded = (ops.len() - queued(&store).len()) as u64;
        let applied = stack
            .op_log_count(tasksync_tests::op_log::OpLog::ops(&ops))
            .await;
        if recorded > 0 && applied > recorded {
            child.kill().unwrap();
            killed = true;
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the sync ended before the kill"
        );
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    assert!(killed, "never caught a push in flight");
    let _ = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap();
    let left = queued(&store);
    assert!(
        !left.is_empty() && left.len() < ops.len(),
        "{} left",
        left.len()
    );

    let report = phone.ok(&["sync"]).await;
    assert_eq!(report["pushed"], left.len() as u64, "{report}");
    for _ in 0..20 {
        if store.queue_counts().unwrap() == Default::default() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        phone.ok(&["sync"]).await;
    }
    assert_eq!(store.queue_counts().unwrap(), Default::default());
    let log = |which| stack.op_log_count(which);
    assert_eq!(
        log(tasksync_tests::op_log::OpLog::ops(&ops)).await,
        ops.len() as u64
    );
    assert_eq!(
        log(tasksync_tests::op_log::OpLog::all()).await,
        ops.len() as u64,
        "none applied twice"
    );
    stack.feed_caught_up().await;
    assert_eq!(
        shown(&store.tasks(true).unwrap()),
        server_shown(&stack).await
    );
}
