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

/// A usable AMQP connection string: `amqp://`, a host, a non-empty virtual host (`%2f` is the
/// default `/`), and valid parameters.
pub(super) fn amqp_url(value: String) -> Result<SecretUrl, ConfigError> {
    let url = SecretUrl::from(value);
    let invalid = |reason: String| ConfigError {
        name: "AMQP_URL",
        value: url.redacted(),
        reason,
    };
    let parsed = url::Url::parse(&url).map_err(|e| invalid(e.to_string()))?;
    let uri = AMQPUri::from_str(&url).map_err(invalid)?;
    if uri.scheme == AMQPScheme::AMQPS {
        return Err(invalid(
            "amqps:// needs TLS, which this build does not include".into(),
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("names no host".into()));
    }
    if uri.vhost.is_empty() {
        return Err(invalid(
            "names an empty virtual host; end the URL with /%2f for the default \"/\"".into(),
        ));
    }
    Ok(url)
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
        }
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
