//! Settings read from the environment (and a `.env` file when present).
//!
//! Every variable is documented here, in `.env.example` and in the README. Errors name the
//! variable and the value that could not be parsed (connection strings with their password
//! masked). Connection strings are checked here too ([`urls`]), so that no service starts with
//! one it could never connect with; they are held as [`SecretUrl`], which never prints a
//! password.

use std::{fmt, str::FromStr, time::Duration};

mod edge;
mod events;
pub mod help;
mod secret;
mod urls;

pub use edge::{
    AllowedOrigins, DEFAULT_AUTHENTICATED_RATE, DEFAULT_QUEUE_HIGH_WATER, EdgeSettings, RateLimit,
};
pub use events::{
    DEFAULT_EVENTS_HEARTBEAT, DEFAULT_EVENTS_MAX_SUBSCRIBERS, DEFAULT_EVENTS_PER_USER,
    EventsSettings,
};
pub use secret::{MASK, SecretUrl, redact};

/// Default user every request acts as until authentication exists.
pub const DEFAULT_USER: &str = "default";

/// Settings of both services and the ops tooling.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `DATABASE_URL`: Postgres connection string.
    pub database_url: SecretUrl,
    /// `AMQP_URL`: RabbitMQ connection string; several, comma-separated, for the nodes of a
    /// cluster (a connection goes to the first that answers; see [`crate::amqp::connect`]).
    pub amqp_url: SecretUrl,
    /// `HOST`: address the api binds to.
    pub host: String,
    /// `PORT`: the api's HTTP port (0 picks a free one).
    pub port: u16,
    /// `JWT_*`: how the api authenticates requests ([`JwtSettings`]).
    pub jwt: JwtSettings,
    /// `AMQP_PREFIX`: prefix of every exchange and queue name.
    pub amqp_prefix: String,
    /// `AMQP_QUEUE_TYPE`: `quorum` (default) or `classic` for the durable queues.
    pub queue_type: QueueType,
    /// `RETRY_DELAYS_MS`: the three retry delays, comma-separated milliseconds.
    pub retry_delays: Vec<Duration>,
    /// `WORK_PARTITIONS`: K, how many work queues operations are spread over by task id (1 to
    /// [`crate::topology::MAX_PARTITIONS`]); every api and worker of a stack uses the same K.
    pub work_partitions: u16,
    /// `WORKER_PARTITIONS`: the partitions this worker consumes, e.g. `0,2`; `None` (unset or
    /// empty) is every partition.
    pub worker_partitions: Option<Vec<u16>>,
    /// `WRITE_WAIT_MS`: how long a write waits for the worker before answering 202.
    pub write_wait: Duration,
    /// `PUBLISH_TIMEOUT_MS`: how long the api waits for a publisher confirm before answering 503.
    pub publish_timeout: Duration,
    /// `API_PUBLISH_CHANNELS`: confirming channels the api's publishes take turns on (at most
    /// [`MAX_PUBLISH_CHANNELS`]).
    pub publish_channels: usize,
    /// `AMQP_PREFETCH`: unacknowledged deliveries the worker may hold.
    pub prefetch: u16,
    /// `WORKER_BATCH_SIZE`: most deliveries the worker applies in one transaction.
    pub batch_size: usize,
    /// `WORKER_BATCHES_IN_FLIGHT`: batches one worker applies at once (at most
    /// [`MAX_BATCHES_IN_FLIGHT`]; times `batch_size`, at most [`MAX_TASKS_LOCKED`]).
    pub batches_in_flight: usize,
    /// `DB_POOL_SIZE`: Postgres connections per process.
    pub db_pool_size: usize,
    /// `BODY_LIMIT_BYTES`: largest request body the api accepts.
    pub body_limit: usize,
    /// `MAX_BATCH_ITEMS`: most items one `/api/batch` or `/api/sync` request may carry.
    pub max_batch_items: usize,
    /// `RATE_LIMIT_RPS`, `RATE_LIMIT_BURST`, `QUEUE_HIGH_WATER`, `CORS_ALLOWED_ORIGINS`: the
    /// per-user rate, the work-queue high water and the browser origins ([`EdgeSettings`]).
    pub edge: EdgeSettings,
    /// `DB_TIMEOUT_MS`: longest wait for one database round (a read, a batch transaction)
    /// before the database counts as unavailable.
    pub db_timeout: Duration,
    /// `SHUTDOWN_TIMEOUT_MS`: how long a service may take to stop after SIGTERM or Ctrl-C before
    /// it exits anyway (non-zero, with a log line).
    pub shutdown_timeout: Duration,
    /// `LOG_FORMAT`: `text` (default) or `json`.
    pub log_format: LogFormat,
    /// `HTTP_HEADER_TIMEOUT_MS`: longest wait for a request's headers (also how long an idle
    /// keep-alive connection stays open); the api then closes the connection.
    pub http_header_timeout: Duration,
    /// `HTTP_REQUEST_TIMEOUT_MS`: longest time from a request's headers to its answer. A body
    /// not received by then is a 408; an answer not ready by then a 503.
    pub http_request_timeout: Duration,
    /// `HTTP_MAX_CONNECTIONS`: most connections the api serves at once; more wait in the
    /// listen backlog until one closes.
    pub http_max_connections: usize,
    /// `WORKER_HTTP_PORT`: the worker's port for `/health`, `/ready` and `/metrics` (0 picks a
    /// free one, as tests do).
    pub worker_http_port: u16,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: base `http://` URL of an OTLP/HTTP collector; spans are
    /// posted to `<it>/v1/traces`. Unset or empty: nothing is exported.
    pub otlp_endpoint: Option<SecretUrl>,
    /// `OTEL_SERVICE_NAME`: the `service.name` of exported spans (unset: `tasksync-api` or
    /// `tasksync-worker`, by binary).
    pub otel_service_name: Option<String>,
    /// `RETENTION_DAYS`: how long the operation log, failure records and tombstones are kept
    /// (the retention horizon); 0 keeps them forever. Read by the worker's sweep.
    pub retention_days: u32,
    /// `RETENTION_SWEEP_SECS`: how often a worker sweeps what lies past the horizon.
    pub retention_sweep: Duration,
    /// `EVENTS_HEARTBEAT_SECS`, `EVENTS_MAX_SUBSCRIBERS`, `EVENTS_MAX_PER_USER`: the api's live
    /// event streams ([`EventsSettings`]).
    pub events: EventsSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            database_url: "postgres://postgres@127.0.0.1:5432/tasksync".into(),
            amqp_url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            host: "0.0.0.0".into(),
            port: 3000,
            jwt: JwtSettings::default(),
            amqp_prefix: "tasksync".into(),
            queue_type: QueueType::Quorum,
            retry_delays: [1_000, 5_000, 25_000].map(Duration::from_millis).to_vec(),
            work_partitions: 1,
            worker_partitions: None,
            write_wait: Duration::from_millis(2_000),
            publish_timeout: Duration::from_millis(5_000),
            publish_channels: 4,
            prefetch: 1_000,
            batch_size: 500,
            batches_in_flight: 2,
            db_pool_size: 16,
            body_limit: 2 * 1024 * 1024,
            max_batch_items: 1_000,
            edge: EdgeSettings::default(),
            db_timeout: Duration::from_millis(30_000),
            shutdown_timeout: Duration::from_millis(30_000),
            log_format: LogFormat::Text,
            http_header_timeout: Duration::from_millis(10_000),
            http_request_timeout: Duration::from_millis(30_000),
            http_max_connections: 10_000,
            worker_http_port: 3001,
            otlp_endpoint: None,
            otel_service_name: None,
            retention_days: 90,
            retention_sweep: Duration::from_secs(3_600),
            events: EventsSettings::default(),
        }
    }
}

/// A variable that is set but cannot be used (or, named [`DOTENV`], a `.env` file that cannot
/// be read).
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub name: &'static str,
    pub value: String,
    pub reason: String,
}

/// The name of a [`ConfigError`] about the `.env` file itself.
pub const DOTENV: &str = ".env";

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            name,
            value,
            reason,
        } = self;
        if *name == DOTENV {
            write!(f, "the {DOTENV} file is invalid: {reason}")
        } else {
            write!(
                f,
                "environment variable {name}={value:?} is invalid: {reason}"
            )
        }
    }
}

impl Settings {
    /// Reads `.env` (if present) and then the process environment over the defaults.
    pub fn from_env() -> Result<Self, ConfigError> {
        // A missing .env is normal; one that cannot be read stops the process like any other
        // invalid value would.
        match dotenvy::dotenv() {
            Err(error) if !error.not_found() => {
                return Err(ConfigError {
                    name: DOTENV,
                    value: String::new(),
                    reason: error.to_string(),
                });
            }
            _ => {}
        }
        // Lossy, not `var(..).ok()`: a value that is not UTF-8 must fail its parse, naming the
        // variable, rather than pass for unset.
        Self::from_lookup(|name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned()))
    }

    /// Builds settings from any variable source (the environment in production, a map in tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let d = Self::default();
        let millis = |ms: u64| Duration::from_millis(ms);
        let jwt = JwtSettings::from_lookup(&get)?;
        // Empty counts as unset: with authentication on, an unset rate takes its default.
        let set = |name: &str| get(name).filter(|value| !value.trim().is_empty());
        let authenticated = jwt.enabled();
        let mut settings = Self {
            database_url: match get("DATABASE_URL") {
                Some(url) => urls::database_url(url)?,
                None => d.database_url,
            },
            amqp_url: match get("AMQP_URL") {
                Some(url) => urls::amqp_url(url)?,
                None => d.amqp_url,
            },
            host: match get("HOST") {
                Some(host) => validate_host(host)?,
                None => d.host,
            },
            port: parse(&get, "PORT")?.unwrap_or(d.port),
            jwt,
            amqp_prefix: match get("AMQP_PREFIX") {
                Some(p) => validate_prefix(p)?,
                None => d.amqp_prefix,
            },
            queue_type: parse(&get, "AMQP_QUEUE_TYPE")?.unwrap_or(d.queue_type),
            retry_delays: match get("RETRY_DELAYS_MS") {
                Some(v) => parse_delays(&v)?,
                None => d.retry_delays,
            },
            work_partitions: at_most(
                "WORK_PARTITIONS",
                positive(&get, "WORK_PARTITIONS")?,
                crate::topology::MAX_PARTITIONS,
            )?
            .unwrap_or(d.work_partitions),
            worker_partitions: None,
            write_wait: parse(&get, "WRITE_WAIT_MS")?
                .map(millis)
                .unwrap_or(d.write_wait),
            publish_timeout: parse(&get, "PUBLISH_TIMEOUT_MS")?
                .map(millis)
                .unwrap_or(d.publish_timeout),
            publish_channels: at_most(
                "API_PUBLISH_CHANNELS",
                positive(&get, "API_PUBLISH_CHANNELS")?,
                MAX_PUBLISH_CHANNELS,
            )?
            .unwrap_or(d.publish_channels),
            prefetch: positive(&get, "AMQP_PREFETCH")?.unwrap_or(d.prefetch),
            batch_size: at_most(
                "WORKER_BATCH_SIZE",
                positive(&get, "WORKER_BATCH_SIZE")?,
                MAX_TASKS_LOCKED,
            )?
            .unwrap_or(d.batch_size),
            batches_in_flight: d.batches_in_flight,
            db_pool_size: positive(&get, "DB_POOL_SIZE")?.unwrap_or(d.db_pool_size),
            body_limit: positive(&get, "BODY_LIMIT_BYTES")?.unwrap_or(d.body_limit),
            max_batch_items: positive(&get, "MAX_BATCH_ITEMS")?.unwrap_or(d.max_batch_items),
            edge: EdgeSettings::from_variables(edge::EdgeVariables {
                authenticated,
                rate_limit_rps: parse(&set, "RATE_LIMIT_RPS")?,
                rate_limit_burst: parse(&set, "RATE_LIMIT_BURST")?,
                queue_high_water: parse(&get, "QUEUE_HIGH_WATER")?,
                cors_allowed_origins: get("CORS_ALLOWED_ORIGINS"),
            })?,
            db_timeout: positive(&get, "DB_TIMEOUT_MS")?
                .map(millis)
                .unwrap_or(d.db_timeout),
            shutdown_timeout: positive(&get, "SHUTDOWN_TIMEOUT_MS")?
                .map(millis)
                .unwrap_or(d.shutdown_timeout),
            log_format: parse(&get, "LOG_FORMAT")?.unwrap_or(d.log_format),
            http_header_timeout: positive(&get, "HTTP_HEADER_TIMEOUT_MS")?
                .map(millis)
                .unwrap_or(d.http_header_timeout),
            http_request_timeout: positive(&get, "HTTP_REQUEST_TIMEOUT_MS")?
                .map(millis)
                .unwrap_or(d.http_request_timeout),
            http_max_connections: positive(&get, "HTTP_MAX_CONNECTIONS")?
                .unwrap_or(d.http_max_connections),
            worker_http_port: parse(&get, "WORKER_HTTP_PORT")?.unwrap_or(d.worker_http_port),
            otlp_endpoint: set("OTEL_EXPORTER_OTLP_ENDPOINT")
                .map(urls::otlp_endpoint)
                .transpose()?,
            otel_service_name: set("OTEL_SERVICE_NAME").map(|name| name.trim().to_string()),
            retention_days: parse(&get, "RETENTION_DAYS")?.unwrap_or(d.retention_days),
            retention_sweep: positive(&get, "RETENTION_SWEEP_SECS")?
                .map(Duration::from_secs)
                .unwrap_or(d.retention_sweep),
            events: EventsSettings::from_variables(
                positive(&get, "EVENTS_HEARTBEAT_SECS")?,
                positive(&get, "EVENTS_MAX_SUBSCRIBERS")?,
                positive(&set, "EVENTS_MAX_PER_USER")?,
                authenticated,
            ),
        };
        let in_flight = at_most(
            "WORKER_BATCHES_IN_FLIGHT",
            positive(&get, "WORKER_BATCHES_IN_FLIGHT")?,
            MAX_BATCHES_IN_FLIGHT,
        )?;
        settings.batches_in_flight = batches_in_flight(in_flight, settings.batch_size)?;
        settings.worker_partitions = set("WORKER_PARTITIONS")
            .map(|v| parse_partitions(&v, settings.work_partitions))
            .transpose()?;
        Ok(settings)
    }
}

/// `WORKER_BATCHES_IN_FLIGHT` (`set`, if it is), such that the worker never holds more than
/// [`MAX_TASKS_LOCKED`] tasks locked. Unset, the default gives way to a large `WORKER_BATCH_SIZE` (down to one batch
/// at a time); set, a product over the budget is an error naming it.
fn batches_in_flight(set: Option<usize>, batch_size: usize) -> Result<usize, ConfigError> {
    let fits = (MAX_TASKS_LOCKED / batch_size.max(1)).max(1);
    match set {
        None => Ok(Settings::default().batches_in_flight.min(fits)),
        Some(n) if n <= fits => Ok(n),
        Some(n) => Err(ConfigError {
            name: "WORKER_BATCHES_IN_FLIGHT",
            reason: format!(
                "{n} batches of WORKER_BATCH_SIZE {batch_size} would lock more than \
                 {MAX_TASKS_LOCKED} tasks at once"
            ),
            value: n.to_string(),
        }),
    }
}

// ---- JWT authentication (the api's; see `services/api/src/auth`) ----------------------------

/// Shortest `JWT_SECRET` accepted: HS256 with fewer than 32 bytes of key is guessable offline
/// from any one token (RFC 7518 §3.2 asks for at least the hash size).
pub const JWT_SECRET_MIN_BYTES: usize = 32;

/// How the api authenticates requests. No key source means single-user development mode.
/// Only the settings are read here; the api loads and checks the key itself at start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JwtSettings {
    /// One of `JWT_SECRET`, `JWT_PUBLIC_KEY_FILE`, `JWT_JWKS_URL` (more than one is an error).
    pub key: Option<JwtKey>,
    /// `JWT_ISSUER`: the `iss` every token must carry, when set.
    pub issuer: Option<String>,
    /// `JWT_AUDIENCE`: a value the token's `aud` must hold, when set.
    pub audience: Option<String>,
}

/// Where the key that verifies tokens comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JwtKey {
    /// `JWT_SECRET`: an HS256 shared secret.
    Secret(JwtSecret),
    /// `JWT_PUBLIC_KEY_FILE`: a PEM public key, RS256 or ES256 (told from the key).
    PublicKeyFile(std::path::PathBuf),
    /// `JWT_JWKS_URL`: an http(s) URL of a JWKS document (printed without a password).
    JwksUrl(SecretUrl),
}

/// The HS256 secret: printed as `***` whole, never in part.
#[derive(Clone, PartialEq, Eq)]
pub struct JwtSecret(String);

impl JwtSecret {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The real bytes: for keys, never for printing.
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for JwtSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl JwtSettings {
    /// Whether tokens are checked (false: development mode).
    pub fn enabled(&self) -> bool {
        self.key.is_some()
    }

    /// Empty values count as unset, so that `.env.example`'s `JWT_SECRET=` means "off".
    fn from_lookup(get: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let nonempty = |v: Option<String>| v.filter(|v| !v.trim().is_empty());
        let secret = nonempty(get("JWT_SECRET"));
        let file = nonempty(get("JWT_PUBLIC_KEY_FILE"));
        let url = nonempty(get("JWT_JWKS_URL"));
        let given: Vec<&str> = [
            ("JWT_SECRET", secret.is_some()),
            ("JWT_PUBLIC_KEY_FILE", file.is_some()),
            ("JWT_JWKS_URL", url.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect();
        if given.len() > 1 {
            return Err(ConfigError {
                name: given[0],
                value: MASK.into(),
                reason: format!("set only one of {}", given.join(", ")),
            });
        }
        let key = match (secret, file, url) {
            (Some(secret), _, _) if secret.len() < JWT_SECRET_MIN_BYTES => {
                return Err(ConfigError {
                    name: "JWT_SECRET",
                    value: MASK.into(),
                    reason: format!(
                        "must be at least {JWT_SECRET_MIN_BYTES} bytes, got {}",
                        secret.len()
                    ),
                });
            }
            (Some(secret), _, _) => Some(JwtKey::Secret(JwtSecret(secret))),
            (_, Some(path), _) => Some(JwtKey::PublicKeyFile(path.into())),
            (_, _, Some(url)) => Some(JwtKey::JwksUrl(jwks_url(url)?.into())),
            _ => None,
        };
        Ok(Self {
            key,
            issuer: nonempty(get("JWT_ISSUER")),
            audience: nonempty(get("JWT_AUDIENCE")),
        })
    }
}

fn jwks_url(value: String) -> Result<String, ConfigError> {
    match url::Url::parse(&value) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => Ok(value),
        Ok(_) => Err(ConfigError {
            name: "JWT_JWKS_URL",
            value: redact(&value),
            reason: "expected an http:// or https:// URL with a host".into(),
        }),
        Err(e) => Err(ConfigError {
            name: "JWT_JWKS_URL",
            value: redact(&value),
            reason: e.to_string(),
        }),
    }
}

// ---- end of JWT authentication -----------------------------------------------------------

fn parse<T>(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
) -> Result<Option<T>, ConfigError>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    get(name)
        .map(|value| {
            value.trim().parse().map_err(|e: T::Err| ConfigError {
                name,
                reason: e.to_string(),
                value,
            })
        })
        .transpose()
}

/// Most tasks one worker may hold locked at once: `WORKER_BATCH_SIZE` ×
/// `WORKER_BATCHES_IN_FLIGHT`. A batch takes one advisory lock per task, and those live in the
/// server's shared lock table (about `max_locks_per_transaction` × `max_connections` entries,
/// 6,400 with Postgres's defaults, shared by every session): past it Postgres answers "out of
/// shared memory". 2,000 leaves room for a few workers and everything else.
pub const MAX_TASKS_LOCKED: usize = 2_000;

/// Largest `WORKER_BATCHES_IN_FLIGHT`: past a few, batches only queue on the database's cores.
pub const MAX_BATCHES_IN_FLIGHT: usize = 8;

/// Most publishing channels `API_PUBLISH_CHANNELS` may ask for: a few spread the confirms over
/// the broker's channel processes; many only hold memory on both sides.
pub const MAX_PUBLISH_CHANNELS: usize = 64;

/// `value` when it is at most `limit`; an error naming the variable otherwise.
fn at_most<T: PartialOrd + fmt::Display>(
    name: &'static str,
    value: Option<T>,
    limit: T,
) -> Result<Option<T>, ConfigError> {
    match value {
        Some(v) if v > limit => Err(ConfigError {
            name,
            value: v.to_string(),
            reason: format!("must be at most {limit}"),
        }),
        other => Ok(other),
    }
}

fn positive<T>(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
) -> Result<Option<T>, ConfigError>
where
    T: FromStr + Default + PartialEq,
    T::Err: fmt::Display,
{
    match parse::<T>(get, name)? {
        Some(v) if v == T::default() => Err(ConfigError {
            name,
            value: get(name).unwrap_or_default(),
            reason: "must be greater than zero".into(),
        }),
        other => Ok(other),
    }
}

/// `WORKER_PARTITIONS`: distinct partition numbers below `k`, comma-separated, in the order
/// given.
fn parse_partitions(value: &str, k: u16) -> Result<Vec<u16>, ConfigError> {
    let err = |reason: String| ConfigError {
        name: "WORKER_PARTITIONS",
        value: value.to_string(),
        reason,
    };
    let mut partitions = Vec::new();
    for part in value.split(',') {
        let p: u16 = part
            .trim()
            .parse()
            .map_err(|e| err(format!("{:?}: {e}", part.trim())))?;
        if p >= k {
            return Err(err(format!(
                "partition {p} does not exist: WORK_PARTITIONS is {k}, so 0 to {}",
                k - 1
            )));
        }
        if partitions.contains(&p) {
            return Err(err(format!("partition {p} is named twice")));
        }
        partitions.push(p);
    }
    Ok(partitions)
}

fn parse_delays(value: &str) -> Result<Vec<Duration>, ConfigError> {
    let err = |reason: String| ConfigError {
        name: "RETRY_DELAYS_MS",
        value: value.to_string(),
        reason,
    };
    let delays = value
        .split(',')
        .map(|part| part.trim().parse::<u64>().map(Duration::from_millis))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if delays.len() != 3 {
        return Err(err(format!("expected three delays, got {}", delays.len())));
    }
    Ok(delays)
}

fn validate_prefix(prefix: String) -> Result<String, ConfigError> {
    let ok = !prefix.is_empty()
        && prefix.len() <= 100
        && prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(prefix)
    } else {
        Err(ConfigError {
            name: "AMQP_PREFIX",
            value: prefix,
            reason: "use 1-100 characters among letters, digits, '-', '_' and '.'".into(),
        })
    }
}

/// An IP address or a host name (letters, digits, '-', '.'): what `HOST` may hold. Anything
/// else would only fail later, at bind, without naming the variable.
fn validate_host(host: String) -> Result<String, ConfigError> {
    let is_ip = host.parse::<std::net::IpAddr>().is_ok();
    let is_name = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if is_ip || is_name {
        Ok(host)
    } else {
        Err(ConfigError {
            name: "HOST",
            value: host,
            reason: "expected an IP address or a host name".into(),
        })
    }
}

/// Type of the durable queues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueType {
    /// Replicated Raft queues (RabbitMQ ≥ 3.8); the default.
    Quorum,
    /// Single-node queues, for brokers or setups without quorum queues.
    Classic,
}

impl FromStr for QueueType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "quorum" => Ok(Self::Quorum),
            "classic" => Ok(Self::Classic),
            _ => Err("expected quorum or classic".into()),
        }
    }
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "text" | "pretty" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err("expected text or json".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_reach_the_local_services() {
        let s = from(&[]).unwrap();
        assert_eq!(s.port, 3000);
        assert_eq!(s.amqp_prefix, "tasksync");
        assert_eq!(
            s.database_url,
            "postgres://postgres@127.0.0.1:5432/tasksync"
        );
        assert_eq!(s.retry_delays, [1, 5, 25].map(Duration::from_secs).to_vec());
    }

    #[test]
    fn the_worker_http_port_defaults_to_3001_and_is_read_from_its_variable() {
        assert_eq!(from(&[]).unwrap().worker_http_port, 3001);
        assert_eq!(
            from(&[("WORKER_HTTP_PORT", "9101")])
                .unwrap()
                .worker_http_port,
            9101
        );
        let error = from(&[("WORKER_HTTP_PORT", "http")]).unwrap_err();
        assert!(error.to_string().contains("WORKER_HTTP_PORT"), "{error}");
    }

    #[test]
    fn the_event_limits_default_by_mode_and_are_read_from_their_variables() {
        let secret = ("JWT_SECRET", "0123456789abcdef0123456789abcdef-s3cret");
        let dev = from(&[]).unwrap().events;
        assert_eq!(dev.heartbeat, Duration::from_secs(15));
        assert_eq!((dev.max_subscribers, dev.max_per_user), (10_000, 10_000));
        assert_eq!(from(&[secret]).unwrap().events.max_per_user, 16);
        let empty = from(&[secret, ("EVENTS_MAX_PER_USER", "")]).unwrap();
        assert_eq!(empty.events.max_per_user, 16, "empty counts as unset");
        let own = from(&[
            ("EVENTS_HEARTBEAT_SECS", "2"),
            ("EVENTS_MAX_SUBSCRIBERS", "50"),
            ("EVENTS_MAX_PER_USER", "3"),
        ])
        .unwrap()
        .events;
        assert_eq!(own.heartbeat, Duration::from_secs(2));
        assert_eq!((own.max_subscribers, own.max_per_user), (50, 3));
        for name in [
            "EVENTS_HEARTBEAT_SECS",
            "EVENTS_MAX_SUBSCRIBERS",
            "EVENTS_MAX_PER_USER",
        ] {
            assert_eq!(from(&[(name, "0")]).unwrap_err().name, name);
            assert_eq!(from(&[(name, "many")]).unwrap_err().name, name);
        }
    }

    #[test]
    fn every_variable_overrides_its_default() {
        let s = from(&[
            ("PORT", "8080"),
            ("AMQP_PREFIX", "t1"),
            ("RETRY_DELAYS_MS", "10, 20,30"),
            ("WRITE_WAIT_MS", "50"),
            ("AMQP_QUEUE_TYPE", "classic"),
            ("LOG_FORMAT", "json"),
            ("RETENTION_DAYS", "0"),
            ("RETENTION_SWEEP_SECS", "60"),
        ])
        .unwrap();
        assert_eq!(s.retention_days, 0, "0 keeps history forever");
        assert_eq!(s.retention_sweep, Duration::from_secs(60));
        assert_eq!(s.port, 8080);
        assert_eq!(s.amqp_prefix, "t1");
        assert_eq!(
            s.retry_delays,
            [10, 20, 30].map(Duration::from_millis).to_vec()
        );
        assert_eq!(s.write_wait, Duration::from_millis(50));
        assert_eq!(s.queue_type, QueueType::Classic);
        assert_eq!(s.log_format, LogFormat::Json);
    }

    #[test]
    fn errors_name_the_variable() {
        let e = from(&[("PORT", "eighty")]).unwrap_err();
        assert_eq!(e.name, "PORT");
        assert!(e.to_string().contains("PORT=\"eighty\""), "{e}");
        assert_eq!(
            from(&[("RETRY_DELAYS_MS", "1,2")]).unwrap_err().name,
            "RETRY_DELAYS_MS"
        );
        assert_eq!(
            from(&[("AMQP_PREFIX", "a b")]).unwrap_err().name,
            "AMQP_PREFIX"
        );
        assert_eq!(
            from(&[("WORKER_BATCH_SIZE", "0")]).unwrap_err().name,
            "WORKER_BATCH_SIZE"
        );
        assert_eq!(
            from(&[("WORKER_BATCH_SIZE", "2001")]).unwrap_err().name,
            "WORKER_BATCH_SIZE"
        );
        assert_eq!(
            from(&[("WORKER_BATCH_SIZE", "2000")]).unwrap().batch_size,
            2000
        );
        // The default number in flight gives way to a large batch; a set one does not.
        assert_eq!(
            from(&[("WORKER_BATCH_SIZE", "2000")])
                .unwrap()
                .batches_in_flight,
            1
        );
        assert_eq!(from(&[]).unwrap().batches_in_flight, 2);
        assert_eq!(
            from(&[
                ("WORKER_BATCHES_IN_FLIGHT", "4"),
                ("WORKER_BATCH_SIZE", "500")
            ])
            .unwrap()
            .batches_in_flight,
            4
        );
        for (in_flight, size) in [("0", "100"), ("9", "100"), ("2", "1001")] {
            assert_eq!(
                from(&[
                    ("WORKER_BATCHES_IN_FLIGHT", in_flight),
                    ("WORKER_BATCH_SIZE", size)
                ])
                .unwrap_err()
                .name,
                "WORKER_BATCHES_IN_FLIGHT"
            );
        }
        assert_eq!(
            from(&[("API_PUBLISH_CHANNELS", "0")]).unwrap_err().name,
            "API_PUBLISH_CHANNELS"
        );
        assert_eq!(
            from(&[("API_PUBLISH_CHANNELS", "65")]).unwrap_err().name,
            "API_PUBLISH_CHANNELS"
        );
        assert_eq!(
            from(&[("API_PUBLISH_CHANNELS", "1")])
                .unwrap()
                .publish_channels,
            1
        );
        assert_eq!(from(&[]).unwrap().publish_channels, 4);
        assert_eq!(from(&[("HOST", "local host")]).unwrap_err().name, "HOST");
        assert_eq!(
            from(&[("AMQP_URL", "garbage")]).unwrap_err().name,
            "AMQP_URL"
        );
        assert_eq!(
            from(&[("DATABASE_URL", "garbage")]).unwrap_err().name,
            "DATABASE_URL"
        );
    }

    #[test]
    fn a_bad_positive_number_is_reported_as_given() {
        for given in ["0", "000", " 0 "] {
            let e = from(&[("DB_POOL_SIZE", given)]).unwrap_err();
            assert_eq!(e.value, given);
            assert!(e.to_string().contains(&format!("{given:?}")), "{e}");
        }
        let e = from(&[("SHUTDOWN_TIMEOUT_MS", "00")]).unwrap_err();
        assert_eq!((e.name, e.value.as_str()), ("SHUTDOWN_TIMEOUT_MS", "00"));
    }

    #[test]
    fn host_names_and_addresses_are_accepted() {
        for host in [
            "0.0.0.0",
            "::",
            "::1",
            "localhost",
            "api-1.internal.example",
        ] {
            assert_eq!(from(&[("HOST", host)]).unwrap().host, host);
        }
        for host in ["", "a b", "-x", "a..b", "http://x"] {
            assert!(from(&[("HOST", host)]).is_err(), "{host}");
        }
    }

    #[test]
    fn the_rate_limit_is_off_in_development_mode_and_on_by_default_with_authentication() {
        let secret = ("JWT_SECRET", "0123456789abcdef0123456789abcdef-s3cret");
        let unset = ("RATE_LIMIT_RPS", "");
        assert_eq!(from(&[unset]).unwrap().edge.rate_limit, None);
        assert_eq!(
            from(&[secret, unset]).unwrap().edge.rate_limit,
            Some(DEFAULT_AUTHENTICATED_RATE)
        );
        let off = from(&[secret, ("RATE_LIMIT_RPS", "0")]).unwrap();
        assert_eq!(off.edge.rate_limit, None);
        let own = from(&[secret, ("RATE_LIMIT_RPS", "7")]).unwrap();
        assert_eq!(own.edge.rate_limit.map(|r| r.per_second.get()), Some(7));
    }

    #[test]
    fn jwt_settings_take_one_key_source_and_a_long_enough_secret() {
        assert_eq!(
            from(&[("JWT_SECRET", "")]).unwrap().jwt,
            JwtSettings::default()
        );
        let short = from(&[("JWT_SECRET", "too-short-secret")]).unwrap_err();
        assert_eq!(short.name, "JWT_SECRET");
        assert!(!short.to_string().contains("too-short"), "{short}");
        let secret = "0123456789abcdef0123456789abcdef-s3cret";
        let s = from(&[("JWT_SECRET", secret), ("JWT_ISSUER", "https://issuer")]).unwrap();
        assert!(s.jwt.enabled());
        assert_eq!(s.jwt.issuer.as_deref(), Some("https://issuer"));
        assert!(!format!("{s:?}").contains("s3cret"));
        let two = from(&[("JWT_SECRET", secret), ("JWT_JWKS_URL", "http://k/jwks")]).unwrap_err();
        assert!(
            two.to_string().contains("JWT_SECRET, JWT_JWKS_URL"),
            "{two}"
        );
        assert_eq!(
            from(&[("JWT_JWKS_URL", "ftp://x/keys")]).unwrap_err().name,
            "JWT_JWKS_URL"
        );
    }

    #[test]
    fn printed_settings_never_show_a_password() {
        let s = from(&[
            (
                "DATABASE_URL",
                "postgres://tasks:pg-S3cret@db:5432/tasksync",
            ),
            ("AMQP_URL", "amqp://tasks:mq-S3cret@rabbit:5672/%2f"),
        ])
        .unwrap();
        let printed = format!("{s:?} {s:#?}");
        assert!(!printed.contains("pg-S3cret"), "{printed}");
        assert!(!printed.contains("mq-S3cret"), "{printed}");
        assert!(
            printed.contains("postgres://tasks:***@db:5432/tasksync"),
            "{printed}"
        );
        assert!(
            printed.contains("amqp://tasks:***@rabbit:5672/%2f"),
            "{printed}"
        );
        // The real values still reach the connecting code.
        assert_eq!(
            s.amqp_url.expose(),
            "amqp://tasks:mq-S3cret@rabbit:5672/%2f"
        );
    }
}
