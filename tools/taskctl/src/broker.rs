//! taskctl's side of RabbitMQ: connecting, looking at a queue, publishing with a confirm, and
//! saying what went wrong in words (never a debug dump of a lapin type).

use std::time::Duration;

use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ErrorKind, Queue,
    options::{BasicPublishOptions, ConfirmSelectOptions},
    protocol::{AMQPErrorKind, AMQPSoftError},
};
use tasksync_shared::{Settings, amqp};

use crate::CtlError;

/// How long a publish may wait for the broker's confirm.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// What a lapin error means, for an operator.
pub fn describe(error: &lapin::Error) -> String {
    match error.kind() {
        ErrorKind::ProtocolError(e) => format!("the broker refused: {}", e.get_message()),
        ErrorKind::IOError(e) => format!("the connection to the broker failed: {e}"),
        ErrorKind::InvalidChannelState(..) | ErrorKind::InvalidConnectionState(_) => {
            "the broker closed the channel".to_string()
        }
        ErrorKind::MissingHeartbeatError => "the broker stopped answering".to_string(),
        _ => error.to_string(),
    }
}

/// A broker error while `doing` something: a failure (exit 1).
pub fn failed(doing: &str, error: &lapin::Error) -> CtlError {
    CtlError::failed(format!("{doing}: {}", describe(error)))
}

fn is_not_found(error: &lapin::Error) -> bool {
    matches!(error.kind(), ErrorKind::ProtocolError(e)
        if *e.kind() == AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND))
}

/// An open connection with one channel, in confirm mode.
#[derive(Debug)]
pub struct Broker {
    connection: Connection,
    pub channel: Channel,
}

impl Broker {
    /// Connects; an unreachable or refusing broker is a failure (exit 1).
    pub async fn connect(settings: &Settings) -> Result<Self, CtlError> {
        let connection =
            amqp::connect(&settings.amqp_url, "taskctl")
                .await
                .map_err(|e| match e {
                    amqp::ConnectError::Broker(e) => failed("cannot reach RabbitMQ (AMQP_URL)", &e),
                    other => CtlError::failed(format!("cannot reach RabbitMQ: {other}")),
                })?;
        let channel = open_channel(&connection).await?;
        Ok(Self {
            connection,
            channel,
        })
    }

    /// Looks at a queue without declaring it. A missing queue is "not found" (exit 3), most
    /// likely a wrong `AMQP_PREFIX`; it closes the channel, so a fresh one replaces it.
    pub async fn inspect(&mut self, name: &str) -> Result<Queue, CtlError> {
        match amqp::inspect_queue(&self.channel, name).await {
            Ok(queue) => Ok(queue),
            Err(e) if is_not_found(&e) => {
                self.channel = open_channel(&self.connection).await?;
                Err(CtlError::NotFound(format!(
                    "no such queue {name} (check AMQP_PREFIX)"
                )))
            }
            Err(e) => Err(failed(&format!("reading queue {name}"), &e)),
        }
    }

    /// Publishes and waits for the broker's confirm; `mandatory`, so a message that no queue
    /// would take comes back as an error instead of vanishing.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), CtlError> {
        let target = if exchange.is_empty() {
            format!("queue {routing_key}")
        } else {
            format!("exchange {exchange} with key {routing_key}")
        };
        let doing = format!("publishing to {target}");
        let options = BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        };
        let confirm = self
            .channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                options,
                body,
                properties,
            )
            .await
            .map_err(|e| failed(&doing, &e))?;
        let confirmation = tokio::time::timeout(CONFIRM_TIMEOUT, confirm)
            .await
            .map_err(|_| CtlError::failed(format!("{doing}: the broker did not confirm")))?
            .map_err(|e| failed(&doing, &e))?;
        match confirmation {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
                Err(CtlError::failed(format!(
                    "{doing}: the broker returned it ({})",
                    returned.reply_text
                )))
            }
            Confirmation::Nack(None) => Err(CtlError::failed(format!(
                "{doing}: the broker refused to store it"
            ))),
            Confirmation::NotRequested => Err(CtlError::failed(format!(
                "{doing}: the broker did not confirm"
            ))),
        }
    }

    pub async fn close(self) {
        let _ = self.connection.close(200, "done".into()).await;
    }
}

async fn open_channel(connection: &Connection) -> Result<Channel, CtlError> {
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| failed("opening a channel", &e))?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| failed("enabling publisher confirms", &e))?;
    Ok(channel)
}
