//! The Postgres and RabbitMQ the tests talk to (SPEC §7): the ones named by `DATABASE_URL` and
//! `AMQP_URL` (or the defaults) when they answer, otherwise containers started through
//! testcontainers. When neither is possible, the test fails and says what to start.

use std::{str::FromStr, time::Duration};

use tasksync_shared::Settings;
use tokio::{net::TcpStream, sync::OnceCell};

/// Where the services are.
#[derive(Debug)]
pub struct Services {
    /// A Postgres URL without the database name part, e.g. `postgres://postgres@127.0.0.1:5432`.
    pub postgres_base: String,
    pub amqp_url: String,
}

impl Services {
    /// The URL of database `name` on this Postgres.
    pub fn database_url(&self, name: &str) -> String {
        format!("{}/{name}", self.postgres_base)
    }
}

static SERVICES: OnceCell<Services> = OnceCell::const_new();

/// The services for this test process, found or started once.
pub async fn get() -> &'static Services {
    SERVICES.get_or_init(find_or_start).await
}

async fn answers(host: &str, port: u16) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(2), TcpStream::connect((host, port))).await,
        Ok(Ok(_))
    )
}

fn host_port(config: &tokio_postgres::Config) -> (String, u16) {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".into(),
    };
    (host, config.get_ports().first().copied().unwrap_or(5432))
}

/// The URL up to (not including) the `/database` part.
fn strip_database(url: &str) -> String {
    let without_query = url.split('?').next().unwrap_or(url);
    let scheme_end = without_query.find("://").map_or(0, |i| i + 3);
    match without_query[scheme_end..].find('/') {
        Some(i) => without_query[..scheme_end + i].to_string(),
        None => without_query.to_string(),
    }
}

async fn find_or_start() -> Services {
    let settings = Settings::from_env().expect("test environment settings");
    let pg = tokio_postgres::Config::from_str(&settings.database_url).expect("DATABASE_URL");
    let (pg_host, pg_port) = host_port(&pg);
    let amqp: lapin::uri::AMQPUri = settings.amqp_url.parse().expect("AMQP_URL");
    let pg_up = answers(&pg_host, pg_port).await;
    let amqp_up = answers(&amqp.authority.host, amqp.authority.port).await;
    if pg_up && amqp_up {
        return Services {
            postgres_base: strip_database(&settings.database_url),
            amqp_url: settings.amqp_url.expose().to_string(),
        };
    }
    eprintln!(
        "Postgres at {pg_host}:{pg_port} answers: {pg_up}; RabbitMQ at {}:{} answers: {amqp_up}. \
         Starting containers with testcontainers.",
        amqp.authority.host, amqp.authority.port
    );
    containers::start().await.unwrap_or_else(|e| {
        panic!(
            "The tests need Postgres and RabbitMQ. None answer at DATABASE_URL/AMQP_URL \
             ({pg_host}:{pg_port}, {}:{}) and containers could not be started ({e}). \
             Start them (e.g. `pg_ctlcluster <version> main start` and `rabbitmq-server -detached`, \
             or `docker compose up -d postgres rabbitmq`), or point DATABASE_URL and AMQP_URL at yours.",
            amqp.authority.host, amqp.authority.port
        )
    })
}

mod containers {
    use testcontainers_modules::{
        postgres::Postgres,
        rabbitmq::RabbitMq,
        testcontainers::{ContainerAsync, runners::AsyncRunner},
    };
    use tokio::sync::OnceCell;

    use super::Services;

    /// Kept for the life of the test process; testcontainers' reaper removes them after.
    static RUNNING: OnceCell<(ContainerAsync<Postgres>, ContainerAsync<RabbitMq>)> =
        OnceCell::const_new();

    pub async fn start() -> Result<Services, String> {
        let (pg, mq) = RUNNING
            .get_or_try_init(|| async {
                let pg = Postgres::default()
                    .start()
                    .await
                    .map_err(|e| e.to_string())?;
                let mq = RabbitMq::default()
                    .start()
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>((pg, mq))
            })
            .await?;
        let pg_port = pg
            .get_host_port_ipv4(5432)
            .await
            .map_err(|e| e.to_string())?;
        let mq_port = mq
            .get_host_port_ipv4(5672)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Services {
            postgres_base: format!("postgres://postgres:postgres@127.0.0.1:{pg_port}"),
            amqp_url: format!("amqp://guest:guest@127.0.0.1:{mq_port}/%2f"),
        })
    }
}

/// Drops a test database, disconnecting whoever still uses it.
pub async fn drop_database(url: &str) {
    let Ok(config) = tokio_postgres::Config::from_str(url) else {
        return;
    };
    let Some(name) = config.get_dbname().map(str::to_string) else {
        return;
    };
    let mut maintenance = config.clone();
    maintenance.dbname("postgres");
    if let Ok((client, connection)) = maintenance.connect(tokio_postgres::NoTls).await {
        tokio::spawn(connection);
        let _ = client
            .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::strip_database;

    #[test]
    fn the_database_part_is_stripped() {
        assert_eq!(
            strip_database("postgres://u@h:5432/db?x=1"),
            "postgres://u@h:5432"
        );
        assert_eq!(strip_database("postgres://u@h:5432"), "postgres://u@h:5432");
    }
}
