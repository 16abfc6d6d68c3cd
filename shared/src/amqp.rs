//! Connecting to RabbitMQ, and the backoff both services use to reconnect.

use std::time::Duration;

use lapin::{
    Channel, Connection, ConnectionProperties, Queue, options::QueueDeclareOptions,
    types::FieldTable,
};

/// Opens a connection named after the process role, so it is recognisable in the management UI.
pub async fn connect(url: &str, name: &str) -> lapin::Result<Connection> {
    let url = with_default_heartbeat(url);
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    Connection::connect(&url, properties).await
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

/// Adds `heartbeat=10` to the URL unless it sets one, so that a dead TCP path is noticed in
/// seconds rather than minutes.
fn with_default_heartbeat(url: &str) -> String {
    if url.contains("heartbeat=") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&heartbeat=10")
    } else {
        format!("{url}?heartbeat=10")
    }
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
        assert_eq!(
            with_default_heartbeat("amqp://h/%2f"),
            "amqp://h/%2f?heartbeat=10"
        );
        assert_eq!(
            with_default_heartbeat("amqp://h/%2f?x=1"),
            "amqp://h/%2f?x=1&heartbeat=10"
        );
        assert_eq!(
            with_default_heartbeat("amqp://h?heartbeat=3"),
            "amqp://h?heartbeat=3"
        );
    }
}
