//! Connecting to RabbitMQ, and the backoff both services use to reconnect.
//!
//! [`connect`] is bounded in time and says why it failed in one line ([`ConnectError`]); a
//! refused login is told apart, because retrying cannot fix it. [`check_login`] is the
//! start-up check both services run: it stops them when the broker refuses their credentials
//! before any session has succeeded.
//!
//! `AMQP_URL` may list a cluster's nodes ([`addresses`]). A connection goes to the first node
//! that answers, trying them in turn from the one after the node this process connected to
//! last (a process's first connection starts at a node drawn from its process id): a session that broke because its node went away reconnects to another node first,
//! and the services' connections spread over the nodes. The caller's reconnect loop is the
//! failover: it opens a new connection, declares the topology again and resumes.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use lapin::{
    Channel, Connection, ConnectionProperties, ErrorKind, Queue,
    options::QueueDeclareOptions,
    protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError},
    types::FieldTable,
    uri::AMQPUri,
};

/// Longest wait for a connection to open (TCP, handshake, login), so that a broker that
/// accepts TCP and then says nothing cannot hold a caller forever.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Heartbeat interval, in seconds, unless `AMQP_URL` sets `heartbeat=`: a dead TCP path is
/// noticed in seconds rather than minutes.
const DEFAULT_HEARTBEAT: u16 = 10;

/// Why a connection could not be opened. Its `Display` is one line and never holds the URL.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("AMQP_URL is not a usable AMQP URL: {0}")]
    Url(String),
    /// Wrong credentials, or a virtual host that does not exist or is not allowed.
    #[error("AMQP_URL: login refused by the broker: {0}")]
    Refused(String),
    #[error("the broker did not complete the connection within {0:?}")]
    Timeout(Duration),
    /// Anything else: unreachable, reset, a protocol failure.
    #[error("{0}")]
    Broker(lapin::Error),
}

impl ConnectError {
    /// Whether reconnecting with the same URL cannot help.
    pub fn is_refused(&self) -> bool {
        matches!(self, Self::Refused(_) | Self::Url(_))
    }

    fn from_lapin(error: lapin::Error) -> Self {
        if let ErrorKind::ProtocolError(amqp) = error.kind() {
            let refused = matches!(
                amqp.kind(),
                AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED)
                    | AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED)
            );
            if refused {
                return Self::Refused(amqp.get_message().to_string());
            }
        }
        Self::Broker(error)
    }
}

/// The addresses `url` lists: one URL, or several separated by commas (a comma starts a new
/// address only when a `scheme://` follows it, so a comma inside a password stays put).
pub fn addresses(url: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    for (at, _) in url.match_indices(',') {
        let next = url[at + 1..].trim_start();
        let scheme = next.split_once("://").map(|(scheme, _)| scheme);
        let names_a_scheme = scheme.is_some_and(|s| {
            !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '+')
        });
        if names_a_scheme || next.is_empty() || next.starts_with(',') {
            out.push(url[start..at].trim());
            start = at + 1;
        }
    }
    out.push(url[start..].trim());
    out
}

/// Where the next connection starts trying (an index into [`addresses`], modulo their number);
/// [`UNSET`] until the first connection, which starts at an index drawn from the process id, so
/// that many processes with one `AMQP_URL` do not all connect to its first node.
static NEXT_ADDRESS: AtomicUsize = AtomicUsize::new(UNSET);
const UNSET: usize = usize::MAX;

/// Opens a connection named after the process role, so it is recognisable in the management UI:
/// to the first of `url`'s addresses that answers, starting after the one used last.
pub async fn connect(url: &str, name: &str) -> Result<Connection, ConnectError> {
    let addresses = addresses(url);
    let count = addresses.len();
    let first = match NEXT_ADDRESS.load(Ordering::Relaxed) {
        UNSET => usize::try_from(std::process::id()).unwrap_or(0) % count.max(1),
        next => next % count.max(1),
    };
    let mut failed = None;
    for i in 0..count {
        let index = (first + i) % count;
        let address = addresses[index];
        match connect_within(address, name, CONNECT_TIMEOUT).await {
            Ok(connection) => {
                NEXT_ADDRESS.store((index + 1) % count, Ordering::Relaxed);
                if count > 1 {
                    tracing::info!(node = %node_of(address), "connected to the broker");
                }
                return Ok(connection);
            }
            Err(error) => {
                if count > 1 {
                    tracing::debug!(node = %node_of(address), %error, "broker node not usable");
                }
                // A refused login says more than an unreachable node: keep it.
                if !matches!(failed, Some(ConnectError::Refused(_))) {
                    failed = Some(error);
                }
            }
        }
    }
    // The next try starts one further on, so that an address that hangs is not always first.
    NEXT_ADDRESS.store((first + 1) % count.max(1), Ordering::Relaxed);
    Err(failed.unwrap_or_else(|| ConnectError::Url("lists no address".into())))
}

/// `host:port` of an address, for logs (no credentials).
fn node_of(address: &str) -> String {
    match url::Url::parse(address) {
        Ok(url) => format!(
            "{}:{}",
            url.host_str().unwrap_or_default(),
            url.port().unwrap_or(5672)
        ),
        Err(_) => "?".into(),
    }
}

async fn connect_within(
    url: &str,
    name: &str,
    limit: Duration,
) -> Result<Connection, ConnectError> {
    let uri = parse_uri(url)?;
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    match tokio::time::timeout(limit, Connection::connect_uri(uri, properties)).await {
        Ok(result) => result.map_err(ConnectError::from_lapin),
        Err(_) => Err(ConnectError::Timeout(limit)),
    }
}

/// Checks, at start, that the broker accepts the credentials of `url`: retries (quietly, the
/// service's own loop logs its attempts) while the broker is unreachable, returns `Ok` at the
/// first successful login and the error when the broker refuses it. A service that gets the
/// error stops: no retry can fix a wrong password or a missing virtual host.
pub async fn check_login(url: &str, name: &str) -> Result<(), ConnectError> {
    let mut backoff = Backoff::new();
    loop {
        match connect(url, name).await {
            Ok(connection) => {
                let _ = tokio::time::timeout(
                    Duration::from_secs(2),
                    connection.close(200, "login checked".into()),
                )
                .await;
                return Ok(());
            }
            Err(error) if error.is_refused() => return Err(error),
            Err(error) => {
                tracing::debug!(%error, "start-up login check: broker not reachable yet");
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

/// Looks at an existing queue (ready messages, consumers) without declaring it. A missing queue
/// is an error and closes `channel`, as AMQP does with a failed passive declare.
pub async fn inspect_queue(channel: &Channel, name: &str) -> lapin::Result<Queue> {
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    channel
        .queue_declare(name.into(), passive, FieldTable::default())
        .await
}

/// The URL as lapin will use it: the default heartbeat unless one is set, and the host as
/// written (the URI parser takes it from `Url::domain`, which is empty for an IPv6 address,
/// and would then silently fall back to `localhost`).
fn parse_uri(url: &str) -> Result<AMQPUri, ConnectError> {
    let mut uri: AMQPUri = url.parse().map_err(ConnectError::Url)?;
    let parsed = url::Url::parse(url).map_err(|e| ConnectError::Url(e.to_string()))?;
    match parsed.host() {
        Some(url::Host::Ipv4(ip)) => uri.authority.host = ip.to_string(),
        Some(url::Host::Ipv6(ip)) => uri.authority.host = ip.to_string(),
        Some(url::Host::Domain(_)) | None => {}
    }
    uri.query.heartbeat.get_or_insert(DEFAULT_HEARTBEAT);
    Ok(uri)
}

/// Exponential backoff with a ceiling: 100 ms, 200 ms, ... up to 5 s.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    pub fn new() -> Self {
        Self { next: Self::FIRST }
    }

    /// The delay to wait now; doubles the next one.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        delay
    }

    pub fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_ceiling_and_resets() {
        let mut b = Backoff::new();
        let delays: Vec<_> = (0..8).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        b.reset();
        assert_eq!(b.next_delay().as_millis(), 100);
    }

    #[test]
    fn a_heartbeat_is_added_unless_set() {
        let heartbeat = |url| parse_uri(url).unwrap().query.heartbeat;
        assert_eq!(heartbeat("amqp://h/%2f"), Some(10));
        assert_eq!(heartbeat("amqp://h/%2f?frame_max=8192"), Some(10));
        assert_eq!(heartbeat("amqp://h?heartbeat=3"), Some(3));
    }

    #[test]
    fn a_list_of_urls_is_split_at_commas_before_a_scheme() {
        assert_eq!(addresses("amqp://h/%2f"), ["amqp://h/%2f"]);
        assert_eq!(
            addresses("amqp://u:p@a/%2f, amqp://u:p@b:5673/%2f,amqp://c"),
            ["amqp://u:p@a/%2f", "amqp://u:p@b:5673/%2f", "amqp://c"]
        );
        // A comma in a password is not a separator.
        assert_eq!(
            addresses("amqp://u:p,q@a/%2f,amqp://u:p,q@b/%2f"),
            ["amqp://u:p,q@a/%2f", "amqp://u:p,q@b/%2f"]
        );
        // Empty entries stay, so that validation names them.
        assert_eq!(addresses("amqp://a/%2f,"), ["amqp://a/%2f", ""]);
        assert_eq!(
            addresses("amqp://a,,amqp://b"),
            ["amqp://a", "", "amqp://b"]
        );
    }

    #[tokio::test]
    async fn when_no_address_answers_the_error_holds_no_password() {
        // Ports nothing listens on answer at once.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let url = format!("amqp://u:p@127.0.0.1:{port}/%2f,amqp://u:p@127.0.0.1:{port}/%2f");
        let error = connect(&url, "test").await.unwrap_err();
        assert!(matches!(error, ConnectError::Broker(_)), "{error}");
        assert!(!error.to_string().contains(":p@"), "{error}");
    }

    #[test]
    fn the_host_is_used_as_written() {
        let host = |url| parse_uri(url).unwrap().authority.host;
        assert_eq!(host("amqp://u:p@10.1.2.3:5672/%2f"), "10.1.2.3");
        assert_eq!(host("amqp://u:p@[::1]:5672/%2f"), "::1");
        assert_eq!(host("amqp://rabbit.internal/%2f"), "rabbit.internal");
    }

    #[tokio::test]
    async fn a_broker_that_says_nothing_is_given_up_on() {
        // Accepts TCP, never speaks AMQP.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let _held = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let url = format!("amqp://u:p@127.0.0.1:{port}/%2f");
        let limit = Duration::from_millis(300);
        let error = connect_within(&url, "test", limit).await.unwrap_err();
        assert!(matches!(error, ConnectError::Timeout(_)), "{error}");
    }
}
