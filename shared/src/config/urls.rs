//! Checks of `DATABASE_URL` and `AMQP_URL` at load time, so that a connection string no
//! connection could ever use stops the process at start, naming the variable, instead of
//! failing every reconnect forever. What they cannot know (a wrong password, a host that is
//! down) is found when connecting.

use std::str::FromStr;

use lapin::uri::{AMQPScheme, AMQPUri};
use tokio_postgres::config::SslMode;

use super::{ConfigError, SecretUrl};

/// A usable Postgres connection string: parses, names a host, a user and a database, and asks
/// for no TLS (this build connects without TLS).
pub(super) fn database_url(value: String) -> Result<SecretUrl, ConfigError> {
    let url = SecretUrl::from(value);
    let config = tokio_postgres::Config::from_str(&url).map_err(|e| invalid_db(&url, e))?;
    let problem = if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
        Some("names no host")
    } else if config.get_user().is_none() {
        Some("names no user")
    } else if config.get_dbname().is_none_or(str::is_empty) {
        Some("names no database")
    } else if config.get_ssl_mode() == SslMode::Require {
        Some("asks for sslmode=require, but this build connects without TLS")
    } else {
        None
    };
    match problem {
        Some(reason) => Err(invalid_db(&url, reason)),
        None => Ok(url),
    }
}

fn invalid_db(url: &SecretUrl, reason: impl ToString) -> ConfigError {
    ConfigError {
        name: "DATABASE_URL",
        value: url.redacted(),
        reason: reason.to_string(),
    }
}

/// A usable OTLP/HTTP collector base URL: `http://` with a host (this build has no TLS), no
/// query or fragment. A trailing `/` is dropped, so that `<it>/v1/traces` has one slash.
pub(super) fn otlp_endpoint(value: String) -> Result<SecretUrl, ConfigError> {
    let trimmed = value.trim().trim_end_matches('/').to_string();
    let invalid = |reason: String| ConfigError {
        name: "OTEL_EXPORTER_OTLP_ENDPOINT",
        value: super::redact(&value),
        reason,
    };
    let parsed = url::Url::parse(&trimmed).map_err(|e| invalid(e.to_string()))?;
    if parsed.scheme() != "http" {
        return Err(invalid(
            "expected an http:// URL (this build exports without TLS)".into(),
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("names no host".into()));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(invalid("expected no query or fragment".into()));
    }
    Ok(SecretUrl::from(trimmed))
}

/// Most broker addresses one `AMQP_URL` may list.
pub const MAX_AMQP_ADDRESSES: usize = 16;

/// A usable AMQP connection string, or several, comma-separated, for the nodes of a cluster:
/// each `amqp://`, with a host, a non-empty virtual host (`%2f` is the default `/`), and valid
/// parameters. An error about one of several names it by position.
pub(super) fn amqp_url(value: String) -> Result<SecretUrl, ConfigError> {
    let url = SecretUrl::from(value);
    let addresses = crate::amqp::addresses(&url);
    let invalid = |reason: String| ConfigError {
        name: "AMQP_URL",
        value: url.redacted(),
        reason,
    };
    if addresses.len() > MAX_AMQP_ADDRESSES {
        return Err(invalid(format!(
            "lists {} addresses; at most {MAX_AMQP_ADDRESSES}",
            addresses.len()
        )));
    }
    for (i, address) in addresses.iter().enumerate() {
        if let Err(reason) = amqp_address(address) {
            return Err(invalid(if addresses.len() == 1 {
                reason
            } else {
                format!("address {} of {}: {reason}", i + 1, addresses.len())
            }));
        }
    }
    Ok(url)
}

fn amqp_address(address: &str) -> Result<(), String> {
    let parsed = url::Url::parse(address).map_err(|e| e.to_string())?;
    let uri = AMQPUri::from_str(address)?;
    if uri.scheme == AMQPScheme::AMQPS {
        return Err("amqps:// needs TLS, which this build does not include".into());
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("names no host".into());
    }
    if uri.vhost.is_empty() {
        return Err(
            "names an empty virtual host; end the URL with /%2f for the default \"/\"".into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(url: &str) -> Result<SecretUrl, ConfigError> {
        database_url(url.into())
    }

    fn mq(url: &str) -> Result<SecretUrl, ConfigError> {
        amqp_url(url.into())
    }

    #[test]
    fn usable_urls_pass() {
        assert!(db("postgres://postgres@127.0.0.1:5432/tasksync").is_ok());
        assert!(db("postgresql://u:p@h1,h2/db?sslmode=prefer").is_ok());
        assert!(db("host=/var/run/postgresql user=u dbname=d").is_ok());
        assert!(mq("amqp://guest:guest@127.0.0.1:5672/%2f").is_ok());
        assert!(mq("amqp://rabbit/%2f?heartbeat=5").is_ok());
        assert!(mq("amqp://rabbit").is_ok());
        assert!(mq("amqp://rabbit/staging").is_ok());
        assert!(mq("amqp://u:p@r1:5672/%2f,amqp://u:p@r2:5672/%2f").is_ok());
        assert!(mq("amqp://u:p@r1/%2f , amqp://u:p@r2/%2f").is_ok());
    }

    #[test]
    fn unusable_database_urls_are_refused_naming_the_variable() {
        for (url, reason) in [
            ("garbage", ""),
            ("postgres://u@h", "names no database"),
            ("postgres://h/db", "names no user"),
            ("postgres:///db?user=u", "names no host"),
            ("postgres://u@h/db?sslmode=require", "without TLS"),
            ("postgres://u@h:notaport/db", ""),
        ] {
            let e = db(url).unwrap_err();
            assert_eq!(e.name, "DATABASE_URL", "{url}");
            assert!(e.reason.contains(reason), "{url}: {e}");
            assert!(!e.to_string().contains("s3cret"), "{e}");
        }
        let many = vec!["amqp://r/%2f"; MAX_AMQP_ADDRESSES + 1].join(",");
        assert!(mq(&many).unwrap_err().reason.contains("at most 16"));
    }

    #[test]
    fn unusable_amqp_urls_are_refused_naming_the_variable() {
        for (url, reason) in [
            ("garbage", "relative URL without a base"),
            ("http://rabbit/%2f", "scheme"),
            ("amqps://rabbit/%2f", "TLS"),
            ("amqp:///%2f", "names no host"),
            ("amqp://rabbit/", "empty virtual host"),
            ("amqp://rabbit/%2f?heartbeat=often", "invalid digit"),
            (
                "amqp://r1/%2f,amqp://r2/",
                "address 2 of 2: names an empty virtual host",
            ),
            ("amqp://r1/%2f,", "address 2 of 2"),
            ("amqp://u:s3cret@r1/%2f,,amqp://r2/%2f", "address 2 of 3"),
        ] {
            let e = mq(url).unwrap_err();
            assert_eq!(e.name, "AMQP_URL", "{url}");
            assert!(e.reason.contains(reason), "{url}: {e}");
        }
    }

    #[test]
    fn an_otlp_endpoint_is_a_plain_http_base_url() {
        let ok = otlp_endpoint("http://collector:4318/".into()).unwrap();
        assert_eq!(ok.expose(), "http://collector:4318");
        for (url, reason) in [
            ("collector:4318", "http://"),
            ("https://collector:4318", "without TLS"),
            ("http://collector:4318/?x=1", "no query"),
            ("garbage", "relative URL"),
        ] {
            let e = otlp_endpoint(url.into()).unwrap_err();
            assert_eq!(e.name, "OTEL_EXPORTER_OTLP_ENDPOINT", "{url}");
            assert!(e.reason.contains(reason), "{url}: {e}");
        }
        let e = otlp_endpoint("https://u:hunter2@collector".into()).unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn refusals_never_show_the_password() {
        let e = mq("amqps://guest:hunter2@rabbit/%2f").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(e.to_string().contains("guest:***@rabbit"), "{e}");
        let e = db("postgres://u:hunter2@h").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
}
