//! What a test stack creates, named so that it can always be removed: a stack's database is
//! `tasksync_test_<unix seconds>_<tag>` and its queues and exchanges start with
//! `test-<unix seconds>-<tag>.`. A stack removes its own on drop ([`remove_stack`]); a test
//! process killed from outside cannot, so every test start sweeps ([`sweep_leftovers`]) what
//! the naming scheme shows to be older than [`MAX_AGE`]. Names of any other form — the
//! services' own, other projects', or test names of an older scheme without a time — are never
//! touched.

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use tasksync_shared::{Settings, topology::Topology};
use uuid::Uuid;

use crate::services::{self, Services};

const DATABASE_PREFIX: &str = "tasksync_test_";
const BROKER_PREFIX: &str = "test-";

/// Test objects older than this belong to a run that is over: no test runs this long.
pub const MAX_AGE: Duration = Duration::from_secs(2 * 60 * 60);

/// How often (at most, per machine) a test start sweeps; the sweep lists the whole broker.
const SWEEP_EVERY: Duration = Duration::from_secs(10 * 60);

/// The names of one stack's database and topology prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackNames {
    pub database: String,
    pub amqp_prefix: String,
}

impl StackNames {
    /// Fresh names carrying `born` (seconds since the epoch).
    pub fn new(born: u64) -> Self {
        let tag = Uuid::new_v4().simple().to_string();
        Self {
            database: format!("{DATABASE_PREFIX}{born}_{}", &tag[..12]),
            amqp_prefix: format!("{BROKER_PREFIX}{born}-{}", &tag[..8]),
        }
    }
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// When a database of the test scheme was created; `None` for any other name.
pub fn database_born(name: &str) -> Option<u64> {
    let (born, tag) = name.strip_prefix(DATABASE_PREFIX)?.split_once('_')?;
    born_and_tag(born, tag)
}

/// When a queue or exchange of the test scheme was created; `None` for any other name.
pub fn broker_object_born(name: &str) -> Option<u64> {
    let (born, rest) = name.strip_prefix(BROKER_PREFIX)?.split_once('-')?;
    let (tag, _) = rest.split_once('.')?;
    born_and_tag(born, tag)
}

fn born_and_tag(born: &str, tag: &str) -> Option<u64> {
    let hex_tag = !tag.is_empty() && tag.chars().all(|c| c.is_ascii_hexdigit());
    let digits = born.len() >= 9 && born.chars().all(|c| c.is_ascii_digit());
    (hex_tag && digits).then(|| born.parse().ok()).flatten()
}

/// Whether an object born at `born` is left over from a run that is over.
pub fn is_stale(born: Option<u64>, now: u64) -> bool {
    born.is_some_and(|b| b.saturating_add(MAX_AGE.as_secs()) < now)
}

/// Removes one stack's queues, exchanges and database (errors ignored: best effort). The stack's
/// own URLs may lead through a fault-injecting proxy that is cut or stalled when a test fails,
/// so the database is dropped through the services' own address, and the broker objects are
/// deleted on both (the stack's broker may be a private node), each within a bounded time.
pub async fn remove_stack(settings: &Settings) {
    let topology = Topology::from_settings(settings);
    let (queues, exchanges) = (topology.queues(), topology.exchanges());
    let services = services::get().await;
    let mut brokers = vec![settings.amqp_url.expose()];
    if services.amqp_url != settings.amqp_url.expose() {
        brokers.push(&services.amqp_url);
    }
    for broker in brokers {
        delete_broker_objects(broker, &queues, &exchanges).await;
    }
    let database_url = match database_name(&settings.database_url) {
        Some(name) => services.database_url(&name),
        None => settings.database_url.expose().to_string(),
    };
    services::drop_database(&database_url).await;
}

fn database_name(url: &str) -> Option<String> {
    let config: tokio_postgres::Config = url.parse().ok()?;
    config.get_dbname().map(str::to_string)
}

/// How long one broker may take to delete a stack's objects.
const BROKER_CLEANUP: Duration = Duration::from_secs(5);

async fn delete_broker_objects(amqp_url: &str, queues: &[String], exchanges: &[String]) {
    let deleted = tokio::time::timeout(
        BROKER_CLEANUP,
        delete_on_broker(amqp_url, queues, exchanges),
    )
    .await;
    if deleted.is_err() {
        eprintln!("test cleanup: the broker did not answer within {BROKER_CLEANUP:?}");
    }
}

async fn delete_on_broker(amqp_url: &str, queues: &[String], exchanges: &[String]) {
    let Ok(connection) = tasksync_shared::amqp::connect(amqp_url, "tasksync-test-cleanup").await
    else {
        return;
    };
    // Deleting an exchange that is gone closes the channel: one channel per object.
    for queue in queues {
        if let Ok(channel) = connection.create_channel().await {
            let _ = channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
    }
    for exchange in exchanges {
        if let Ok(channel) = connection.create_channel().await {
            let _ = channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
    }
    let _ = connection.close(200, "done".into()).await;
}

/// Sweeps leftovers of killed runs, at most every [`SWEEP_EVERY`] per machine (a stamp file in
/// the temporary directory says when the last sweep began). Never fails a test.
pub async fn sweep_leftovers(services: &Services) {
    let stamp = std::env::temp_dir().join("tasksync-test-sweep.stamp");
    if swept_recently(&stamp) {
        return;
    }
    let _ = std::fs::write(&stamp, now().to_string());
    sweep(services, now()).await;
}

fn swept_recently(stamp: &PathBuf) -> bool {
    std::fs::metadata(stamp)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|at| at.elapsed().ok())
        .is_some_and(|age| age < SWEEP_EVERY)
}

/// Drops every test-scheme database and deletes every test-scheme queue and exchange that is
/// stale at `now`. Returns how many databases and broker objects it removed.
pub async fn sweep(services: &Services, now: u64) -> (usize, usize) {
    let databases = stale_databases(services, now).await;
    for name in &databases {
        services::drop_database(&services.database_url(name)).await;
    }
    let (queues, exchanges) = match (list_broker("list_queues"), list_broker("list_exchanges")) {
        (Ok(queues), Ok(exchanges)) => (queues, exchanges),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("test sweep: broker not swept ({e})");
            (Vec::new(), Vec::new())
        }
    };
    let stale = |names: Vec<String>| -> Vec<String> {
        names
            .into_iter()
            .filter(|n| is_stale(broker_object_born(n), now))
            .collect()
    };
    let (queues, exchanges) = (stale(queues), stale(exchanges));
    if !queues.is_empty() || !exchanges.is_empty() {
        delete_broker_objects(&services.amqp_url, &queues, &exchanges).await;
    }
    (databases.len(), queues.len() + exchanges.len())
}

async fn stale_databases(services: &Services, now: u64) -> Vec<String> {
    let config: Result<tokio_postgres::Config, _> = services.database_url("postgres").parse();
    let Ok(config) = config else {
        return Vec::new();
    };
    let Ok((client, connection)) = config.connect(tokio_postgres::NoTls).await else {
        eprintln!("test sweep: Postgres not swept (no connection)");
        return Vec::new();
    };
    tokio::spawn(connection);
    let rows = client
        .query(
            "SELECT datname FROM pg_database WHERE datname LIKE 'tasksync\\_test\\_%'",
            &[],
        )
        .await
        .unwrap_or_default();
    rows.iter()
        .map(|r| r.get::<_, String>(0))
        .filter(|name| is_stale(database_born(name), now))
        .collect()
}

/// Names of the local broker's queues or exchanges (`what`: `list_queues`, `list_exchanges`),
/// through `rabbitmqctl`: AMQP cannot list them and the management plugin may be off.
fn list_broker(what: &str) -> Result<Vec<String>, String> {
    let output = Command::new("rabbitmqctl")
        .args(["-q", "--no-table-headers", "--timeout", "10", what, "name"])
        .output()
        .map_err(|e| format!("rabbitmqctl: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "rabbitmqctl {what}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn fresh_names_carry_their_time_and_parse_back() {
        let names = StackNames::new(NOW);
        assert_eq!(database_born(&names.database), Some(NOW));
        let topology = Topology::from_settings(&Settings {
            amqp_prefix: names.amqp_prefix.clone(),
            ..Settings::default()
        });
        for name in topology.queues().iter().chain(&topology.exchanges()) {
            assert_eq!(broker_object_born(name), Some(NOW), "{name}");
        }
        assert!(names.database.len() < 63, "Postgres truncates longer names");
    }

    #[test]
    fn only_old_objects_of_the_test_scheme_are_stale() {
        let old = NOW - MAX_AGE.as_secs() - 1;
        assert!(is_stale(
            database_born(&format!("tasksync_test_{old}_0a1b2c3d4e5f")),
            NOW
        ));
        assert!(is_stale(
            broker_object_born(&format!("test-{old}-0a1b2c3d.ops.work")),
            NOW
        ));
        let recent = NOW - 60;
        assert!(!is_stale(
            database_born(&format!("tasksync_test_{recent}_0a1b2c3d4e5f")),
            NOW
        ));
        assert!(!is_stale(
            broker_object_born(&format!("test-{recent}-0a1b2c3d.ops")),
            NOW
        ));
        for other in [
            "tasksync",
            "postgres",
            "test",
            "tasksync_test_0a1b2c3d4e5f6a7b",
            "tasksync_test_1000000000_not-hex",
            "tasksync_test_1000000000_",
            "test-0a1b2c3d4e5f.ops.work",
            "test-1000000000-0a1b2c3d",
            "test-1000000000-zz.ops",
            "testing-1000000000-0a1b2c3d.ops",
            "tasksync.ops.work",
            "amq.direct",
            "",
        ] {
            assert_eq!(database_born(other), None, "{other}");
            assert_eq!(broker_object_born(other), None, "{other}");
        }
    }

    /// Test databases, queues and exchanges of a run killed over two hours ago go; those of a
    /// running test and anything of another name stay.
    #[tokio::test]
    async fn the_sweep_removes_stale_test_objects_and_nothing_else() {
        let services = services::get().await;
        let stale = StackNames::new(now() - MAX_AGE.as_secs() - 60);
        let fresh = StackNames::new(now());
        let tag = &Uuid::new_v4().simple().to_string()[..8];
        let other = StackNames {
            database: format!("sweep_keep_{tag}"),
            amqp_prefix: format!("sweepkeep-{tag}"),
        };
        for names in [&stale, &fresh, &other] {
            create_database(services, &names.database).await;
            declare(services, &names.amqp_prefix).await;
        }
        let broker_listed = list_broker("list_queues").is_ok();

        // Its counts are not asserted: another test process's start-up sweep, running at the
        // same time, may remove the stale objects first. The end state below is what matters.
        sweep(services, now()).await;
        let mut left = Vec::new();
        for names in [&stale, &fresh, &other] {
            let database = database_exists(services, &names.database).await;
            left.push((database, declared(services, &names.amqp_prefix).await));
        }
        // Removed before asserting, so that a failure leaves nothing behind either.
        for names in [&stale, &fresh, &other] {
            remove_stack(&Settings {
                database_url: services.database_url(&names.database).into(),
                amqp_url: services.amqp_url.as_str().into(),
                amqp_prefix: names.amqp_prefix.clone(),
                ..Settings::default()
            })
            .await;
        }

        let stale_left = if broker_listed {
            (false, (false, false))
        } else {
            eprintln!("rabbitmqctl unavailable: the broker part of the sweep is not checked");
            (false, left[0].1)
        };
        assert_eq!(left[0], stale_left, "stale: database, (queue, exchange)");
        assert_eq!(left[1], (true, (true, true)), "fresh");
        assert_eq!(left[2], (true, (true, true)), "other names");
    }

    async fn maintenance(services: &Services) -> tokio_postgres::Client {
        let config: tokio_postgres::Config = services.database_url("postgres").parse().unwrap();
        let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client
    }

    async fn create_database(services: &Services, name: &str) {
        let client = maintenance(services).await;
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap();
    }

    async fn database_exists(services: &Services, name: &str) -> bool {
        let client = maintenance(services).await;
        client
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
            .await
            .unwrap()
            .is_some()
    }

    /// Declares `<prefix>.ops.work` and the exchange `<prefix>.ops`.
    async fn declare(services: &Services, prefix: &str) {
        let connection = tasksync_shared::amqp::connect(&services.amqp_url, "sweep-test")
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        channel
            .queue_declare(
                format!("{prefix}.ops.work").as_str().into(),
                lapin::options::QueueDeclareOptions::default(),
                Default::default(),
            )
            .await
            .unwrap();
        channel
            .exchange_declare(
                format!("{prefix}.ops").as_str().into(),
                lapin::ExchangeKind::Topic,
                lapin::options::ExchangeDeclareOptions::default(),
                Default::default(),
            )
            .await
            .unwrap();
        let _ = connection.close(200, "done".into()).await;
    }

    /// Whether `<prefix>.ops.work` and `<prefix>.ops` exist.
    async fn declared(services: &Services, prefix: &str) -> (bool, bool) {
        let connection = tasksync_shared::amqp::connect(&services.amqp_url, "sweep-test")
            .await
            .unwrap();
        let queue = connection.create_channel().await.unwrap();
        let queue = tasksync_shared::amqp::inspect_queue(&queue, &format!("{prefix}.ops.work"))
            .await
            .is_ok();
        let exchange = connection.create_channel().await.unwrap();
        let passive = lapin::options::ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let exchange = exchange
            .exchange_declare(
                format!("{prefix}.ops").as_str().into(),
                lapin::ExchangeKind::Topic,
                passive,
                Default::default(),
            )
            .await
            .is_ok();
        let _ = connection.close(200, "done".into()).await;
        (queue, exchange)
    }
}
