//! The one table of the environment variables every binary reads (name, default, meaning), from
//! which each binary's `--help` lists them. [`Settings::from_lookup`] reads the same names; the
//! tests below hold the two together (every name the parser reads is here, and the defaults here
//! give [`Settings::default`]), and `tests/tests/trace.rs` holds the README's table to it.
//!
//! [`Settings::from_lookup`]: super::Settings::from_lookup
//! [`Settings::default`]: super::Settings::default

/// One environment variable.
#[derive(Clone, Copy, Debug)]
pub struct Variable {
    pub name: &'static str,
    /// Its value when unset, as it would be written; `None` when unset means something no
    /// value says (explained in `meaning`).
    pub default: Option<&'static str>,
    pub meaning: &'static str,
}

const fn var(name: &'static str, default: &'static str, meaning: &'static str) -> Variable {
    Variable {
        name,
        default: Some(default),
        meaning,
    }
}

const fn unset(name: &'static str, meaning: &'static str) -> Variable {
    Variable {
        name,
        default: None,
        meaning,
    }
}

/// Every variable, in the README's order.
pub const VARIABLES: &[Variable] = &[
    var(
        "DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/tasksync",
        "Postgres connection string (the worker creates the database if missing)",
    ),
    var(
        "AMQP_URL",
        "amqp://guest:guest@127.0.0.1:5672/%2f",
        "RabbitMQ connection string (virtual host %2f = /); a cluster's nodes comma-separated",
    ),
    var("HOST", "0.0.0.0", "address the api binds to"),
    var("PORT", "3000", "the api's HTTP port (its /metrics too)"),
    var(
        "WORKER_HTTP_PORT",
        "3001",
        "the sync-worker's own HTTP port: /health, /ready, /metrics; 0 picks a free one",
    ),
    unset(
        "JWT_SECRET",
        "HS256 secret, at least 32 bytes; turns authentication on (unset: development mode)",
    ),
    unset(
        "JWT_PUBLIC_KEY_FILE",
        "PEM public key for RS256 or ES256 tokens (instead of JWT_SECRET)",
    ),
    unset(
        "JWT_JWKS_URL",
        "http(s) URL of a JWKS, fetched at start and cached (instead of the two above)",
    ),
    unset("JWT_ISSUER", "when set, a token's iss must equal it"),
    unset("JWT_AUDIENCE", "when set, a token's aud must hold it"),
    var(
        "AMQP_PREFIX",
        "tasksync",
        "prefix of every exchange and queue name",
    ),
    var(
        "AMQP_QUEUE_TYPE",
        "quorum",
        "quorum or classic durable queues",
    ),
    var(
        "RETRY_DELAYS_MS",
        "1000,5000,25000",
        "the three retry delays, comma-separated milliseconds",
    ),
    var(
        "WORK_PARTITIONS",
        "1",
        "work queues operations are spread over by task id (1-64; the same in every service)",
    ),
    unset(
        "WORKER_PARTITIONS",
        "the partitions a worker consumes, e.g. 0,2 (unset: all)",
    ),
    var(
        "WRITE_WAIT_MS",
        "2000",
        "how long a write waits for the worker before answering 202",
    ),
    var(
        "PUBLISH_TIMEOUT_MS",
        "5000",
        "how long the api waits for a publisher confirm before answering 503",
    ),
    var(
        "API_PUBLISH_CHANNELS",
        "4",
        "confirming channels the api's publishes take turns on (1 to 64)",
    ),
    var(
        "AMQP_PREFETCH",
        "1000",
        "unacknowledged deliveries a worker may hold",
    ),
    var(
        "WORKER_BATCH_SIZE",
        "500",
        "most deliveries applied in one transaction",
    ),
    var(
        "WORKER_BATCHES_IN_FLIGHT",
        "2",
        "batches one worker applies at once (1-8; times WORKER_BATCH_SIZE at most 2000)",
    ),
    var(
        "RETENTION_DAYS",
        "90",
        "days the operation log, final failure records and tombstones are kept; 0 = forever",
    ),
    var(
        "RETENTION_SWEEP_SECS",
        "3600",
        "seconds between a worker's retention sweeps",
    ),
    var("DB_POOL_SIZE", "16", "Postgres connections per process"),
    var(
        "BODY_LIMIT_BYTES",
        "2097152",
        "largest request body (413 above)",
    ),
    var(
        "MAX_BATCH_ITEMS",
        "1000",
        "most items in one /api/batch or /api/sync push (413 above)",
    ),
    unset(
        "RATE_LIMIT_RPS",
        "per-user requests per second, 0 = off (unset: off in development mode, 50 with \
         authentication)",
    ),
    unset(
        "RATE_LIMIT_BURST",
        "requests a user may make at once; 0 or unset = RATE_LIMIT_RPS (100 with the \
         authenticated default)",
    ),
    var(
        "QUEUE_HIGH_WATER",
        "100000",
        "ready messages in the (deepest) work queue above which task writes get 429; 0 = off",
    ),
    unset(
        "CORS_ALLOWED_ORIGINS",
        "comma-separated browser origins, or * for any (unset or empty: no CORS headers)",
    ),
    var(
        "DB_TIMEOUT_MS",
        "30000",
        "longest wait for one database round before Postgres counts as unavailable",
    ),
    var(
        "SHUTDOWN_TIMEOUT_MS",
        "30000",
        "longest stop after SIGTERM / Ctrl-C; past it the process exits 1",
    ),
    var(
        "HTTP_HEADER_TIMEOUT_MS",
        "10000",
        "longest wait for a request's headers, and longest idle keep-alive",
    ),
    var(
        "HTTP_REQUEST_TIMEOUT_MS",
        "30000",
        "longest time from a request's headers to its answer (408 / 503)",
    ),
    var(
        "HTTP_MAX_CONNECTIONS",
        "10000",
        "most connections served at once",
    ),
    var(
        "EVENTS_HEARTBEAT_SECS",
        "15",
        "seconds between keepalive comments of an idle /api/events stream",
    ),
    var(
        "EVENTS_MAX_SUBSCRIBERS",
        "10000",
        "open /api/events streams one api serves at most (503 above)",
    ),
    unset(
        "EVENTS_MAX_PER_USER",
        "open /api/events streams of one user at most (429 above); unset: 16 with \
         authentication, EVENTS_MAX_SUBSCRIBERS in development mode",
    ),
    var("LOG_FORMAT", "text", "text or json"),
    var("RUST_LOG", "info", "log filter (tracing EnvFilter syntax)"),
    unset(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "http:// base URL of an OTLP/HTTP collector; spans go to <it>/v1/traces (unset: no \
         export)",
    ),
    unset(
        "OTEL_SERVICE_NAME",
        "service.name of exported spans (unset: tasksync-api or tasksync-worker)",
    ),
];

/// The text `--help` ends with: every variable, its meaning and its default.
pub fn environment_help() -> String {
    let width = VARIABLES.iter().map(|v| v.name.len()).max().unwrap_or(0);
    let mut text = String::from(
        "Environment variables (also read from a .env file in the working directory; every \
         binary reads and checks them all):\n",
    );
    for v in VARIABLES {
        let default = match v.default {
            Some(value) => format!(" [default: {value}]"),
            None => String::new(),
        };
        text.push_str(&format!("  {:width$}  {}{default}\n", v.name, v.meaning));
    }
    text
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::Settings;

    /// Every upper-case string literal of the parser's sources outside their tests.
    fn names_read() -> BTreeSet<String> {
        let sources = [
            include_str!("../config.rs"),
            include_str!("edge.rs"),
            include_str!("events.rs"),
            include_str!("secret.rs"),
            include_str!("urls.rs"),
            include_str!("../telemetry.rs"),
        ];
        let mut names = BTreeSet::new();
        for source in sources {
            let code = source.split("#[cfg(test)]").next().unwrap_or_default();
            for literal in code.split('"').skip(1).step_by(2) {
                let is_name = literal.len() > 2
                    && literal.starts_with(|c: char| c.is_ascii_uppercase())
                    && literal
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
                if is_name {
                    names.insert(literal.to_string());
                }
            }
        }
        names
    }

    #[test]
    fn every_variable_the_parser_reads_is_in_the_table() {
        let listed: BTreeSet<String> = VARIABLES.iter().map(|v| v.name.to_string()).collect();
        let read = names_read();
        for sample in ["DATABASE_URL", "RATE_LIMIT_RPS", "JWT_JWKS_URL", "RUST_LOG"] {
            assert!(read.contains(sample), "the scan misses {sample}: {read:?}");
        }
        let missing: Vec<_> = read.difference(&listed).cloned().collect();
        assert!(missing.is_empty(), "not in VARIABLES: {missing:?}");
        assert_eq!(listed.len(), VARIABLES.len(), "a name is listed twice");
    }

    #[test]
    fn the_tables_defaults_are_the_settings_defaults() {
        let from_table = Settings::from_lookup(|name| {
            VARIABLES
                .iter()
                .find(|v| v.name == name)
                .and_then(|v| v.default)
                .map(str::to_string)
        })
        .unwrap();
        assert_eq!(
            format!("{from_table:?}"),
            format!("{:?}", Settings::default())
        );
    }

    #[test]
    fn the_help_names_every_variable_with_its_default() {
        let help = environment_help();
        for v in VARIABLES {
            let line = help
                .lines()
                .find(|line| line.trim_start().starts_with(&format!("{} ", v.name)))
                .unwrap_or_else(|| panic!("{} not in {help}", v.name));
            if let Some(default) = v.default {
                assert!(line.ends_with(&format!("[default: {default}]")), "{line}");
            }
        }
    }
}
