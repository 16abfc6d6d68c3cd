//! One tracing subscriber setup for every binary: `RUST_LOG` filters (default `info`),
//! `LOG_FORMAT=json` switches to JSON lines.
//!
//! - An invalid `RUST_LOG` stops the process like any other invalid variable ([`init`] returns
//!   the error naming it) instead of silently falling back to `info`.
//! - Colour only when standard output is a terminal, so log files and collectors get plain text.
//! - Logs go to standard output through a writer that drops what cannot be written: a closed
//!   log pipe must not turn a shutdown into a panic (exit 101), it only loses the lines.
//! - The AMQP client's own messages are off unless `RUST_LOG` names `lapin`: every connection
//!   error reaches our code, which logs it once, where lapin would log it three more times.
//! - [`traceparent`]: the W3C trace context both services put on the log lines of an operation.
//! - [`export`]: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, the spans also go to an OTLP collector,
//!   in the same W3C traces.

pub mod export;
pub mod traceparent;

use std::io::{self, IsTerminal, Write};

use tracing_subscriber::{
    EnvFilter, Layer, fmt, fmt::MakeWriter, layer::SubscriberExt, util::SubscriberInitExt,
};

use crate::{
    Settings,
    config::{ConfigError, LogFormat},
};

pub use export::Telemetry;

/// Installs the global subscriber (logs, and the OTLP export when configured, its spans named
/// `service` unless `OTEL_SERVICE_NAME` says otherwise), or says why `RUST_LOG` is unusable.
/// Keep the answer until the end and call [`Telemetry::shutdown`] to send what is left.
/// Calling it again (tests) is harmless: the first subscriber stays.
pub fn init(settings: &Settings, service: &'static str) -> Result<Telemetry, ConfigError> {
    let filter = filter(std::env::var("RUST_LOG").ok())?;
    let (telemetry, otel) = export::start(settings, service);
    let fmt = fmt::layer()
        .with_target(true)
        .with_ansi(io::stdout().is_terminal())
        .with_writer(LossyStdout)
        .log_internal_errors(false);
    let fmt = match settings.log_format {
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
        LogFormat::Text => fmt.boxed(),
    };
    // The filter applies to both: what is not logged is not exported either.
    let subscriber = tracing_subscriber::registry()
        .with(otel)
        .with(fmt)
        .with(filter);
    let _ = subscriber.try_init();
    Ok(telemetry)
}

/// The filter for a `RUST_LOG` value: `info` when unset or blank, an error naming the variable
/// when any directive is invalid.
fn filter(value: Option<String>) -> Result<EnvFilter, ConfigError> {
    let directives = match value {
        Some(v) if !v.trim().is_empty() => v,
        _ => "info".to_string(),
    };
    let quiet_client = if directives.contains("lapin") {
        String::new()
    } else {
        ",lapin=off".to_string()
    };
    EnvFilter::builder()
        .parse(format!("{directives}{quiet_client}"))
        .map_err(|e| ConfigError {
            name: "RUST_LOG",
            value: directives,
            reason: e.to_string(),
        })
}

/// Standard output, minus its errors: a write that fails (EPIPE, a full disk) is dropped.
#[derive(Clone, Copy, Debug)]
struct LossyStdout;

impl Write for LossyStdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _ = io::stdout().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = io::stdout().flush();
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LossyStdout {
    type Writer = LossyStdout;
    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unset_or_blank_filter_means_info() {
        for value in [None, Some(String::new()), Some("  ".into())] {
            assert_eq!(filter(value).unwrap().to_string(), "lapin=off,info");
        }
    }

    #[test]
    fn an_invalid_filter_names_the_variable() {
        let e = filter(Some("info,api=loud".into())).unwrap_err();
        assert_eq!(e.name, "RUST_LOG");
        assert_eq!(e.value, "info,api=loud");
        assert!(e.to_string().contains("RUST_LOG=\"info,api=loud\""), "{e}");
    }

    #[test]
    fn the_client_library_is_quiet_unless_asked_for() {
        assert!(
            filter(Some("debug".into()))
                .unwrap()
                .to_string()
                .contains("lapin=off")
        );
        let asked = filter(Some("info,lapin=warn".into())).unwrap().to_string();
        assert!(!asked.contains("lapin=off"), "{asked}");
    }
}
