//! Connection strings that may carry a password.
//!
//! [`SecretUrl`] shows itself (`Debug`, so `{:?}` and `?field` in logs) with the password
//! replaced by `***`, so a `Settings`, an `AppState` or an error that formats one cannot leak
//! it; [`SecretUrl::redacted`] gives that text for messages. Connecting code reads the real
//! string through [`SecretUrl::expose`] (or `Deref` to `str`, which is what
//! `&settings.database_url` as a `&str` argument uses). There is deliberately no `Display`:
//! with one, `url.to_string()` would quietly be the masked text, and a connection made with it
//! would fail on a password of `***`.

use std::{ffi::OsStr, fmt, ops::Deref};

/// What stands in for a password in anything printed.
pub const MASK: &str = "***";

/// A Postgres or AMQP connection string whose password never appears when it is printed.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The real string, password included: for connecting, never for printing.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The string with any password replaced by [`MASK`].
    pub fn redacted(&self) -> String {
        redact(&self.0)
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.redacted(), f)
    }
}

impl Deref for SecretUrl {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for SecretUrl {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// For handing the real value to a child process's environment (`Command::env`).
impl AsRef<OsStr> for SecretUrl {
    fn as_ref(&self) -> &OsStr {
        OsStr::new(&self.0)
    }
}

impl From<String> for SecretUrl {
    fn from(url: String) -> Self {
        Self(url)
    }
}

impl From<&str> for SecretUrl {
    fn from(url: &str) -> Self {
        Self(url.to_string())
    }
}

impl PartialEq<str> for SecretUrl {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for SecretUrl {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// `url` with every password it may hold replaced by [`MASK`]: the userinfo password of a URL
/// (`scheme://user:password@host`), a `password=` query parameter, and a `password=` keyword of
/// a Postgres key-value string (`host=h password='p w'`). When in doubt it masks more, never
/// less: everything between `://` and the last `@` before the query counts as userinfo.
pub fn redact(url: &str) -> String {
    let addresses = crate::amqp::addresses(url);
    if addresses.len() > 1 {
        // A list of URLs (a cluster's nodes): each masked on its own.
        return addresses
            .iter()
            .map(|address| redact_one(address))
            .collect::<Vec<_>>()
            .join(",");
    }
    redact_one(url)
}

fn redact_one(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{}", redact_after_scheme(rest)),
        None => redact_keywords(url),
    }
}

fn redact_after_scheme(rest: &str) -> String {
    let (before_query, query) = match rest.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (rest, None),
    };
    let mut out = match before_query.rsplit_once('@') {
        Some((userinfo, host_and_path)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:{MASK}@{host_and_path}"),
            None => format!("{userinfo}@{host_and_path}"),
        },
        None => before_query.to_string(),
    };
    if let Some(query) = query {
        out.push('?');
        out.push_str(&redact_query(query));
    }
    out
}

fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}={MASK}"),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Masks the value of every `password` keyword of a key-value connection string.
fn redact_keywords(s: &str) -> String {
    const KEY: &str = "password";
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find(KEY) {
        let (before, after) = rest.split_at(at + KEY.len());
        out.push_str(before);
        let starts_a_word = before[..at].chars().last().is_none_or(char::is_whitespace);
        match after.trim_start().strip_prefix('=') {
            Some(value) if starts_a_word => {
                out.push('=');
                out.push_str(MASK);
                rest = skip_value(value.trim_start());
            }
            _ => rest = after,
        }
    }
    out.push_str(rest);
    out
}

/// What follows a keyword's value: a quoted value ends at its closing quote, a bare one at
/// whitespace; a backslash escapes the next character in both.
fn skip_value(value: &str) -> &str {
    let (quoted, body) = match value.strip_prefix('\'') {
        Some(body) => (true, body),
        None => (false, value),
    };
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if quoted && c == '\'' {
            return &body[i + 1..];
        } else if !quoted && c.is_whitespace() {
            return &body[i..];
        }
    }
    ""
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_userinfo_password_is_masked() {
        assert_eq!(
            redact("amqp://guest:s3cret@rabbit:5672/%2f"),
            "amqp://guest:***@rabbit:5672/%2f"
        );
        assert_eq!(
            redact("postgres://u:p%40ss@h1:5432,h2:5433/db?sslmode=disable"),
            "postgres://u:***@h1:5432,h2:5433/db?sslmode=disable"
        );
        // An unencoded '@' or '/' in the password still masks all of it.
        assert_eq!(
            redact("postgres://u:a/b@c@host/db"),
            "postgres://u:***@host/db"
        );
    }

    #[test]
    fn every_password_of_a_list_is_masked() {
        assert_eq!(
            redact("amqp://u:p1@r1:5672/%2f,amqp://u:p2@r2:5672/%2f"),
            "amqp://u:***@r1:5672/%2f,amqp://u:***@r2:5672/%2f"
        );
    }

    #[test]
    fn urls_without_a_password_are_unchanged() {
        for url in [
            "postgres://postgres@127.0.0.1:5432/tasksync",
            "amqp://rabbit/%2f?heartbeat=5",
            "garbage",
            "",
        ] {
            assert_eq!(redact(url), url);
        }
    }

    #[test]
    fn password_parameters_and_keywords_are_masked() {
        assert_eq!(
            redact("postgres://u@h/db?user=x&password=hunter2&sslmode=prefer"),
            "postgres://u@h/db?user=x&password=***&sslmode=prefer"
        );
        assert_eq!(
            redact("host=h user=u password = 'a b\\' c' dbname=d"),
            "host=h user=u password=*** dbname=d"
        );
        assert_eq!(redact("password=x\\ y dbname=d"), "password=*** dbname=d");
        assert_eq!(redact("mypassword=keep"), "mypassword=keep");
    }

    #[test]
    fn debug_is_redacted_and_the_real_value_is_reachable() {
        let url = SecretUrl::from("amqp://guest:s3cret@rabbit/%2f");
        assert_eq!(format!("{url:?}"), "\"amqp://guest:***@rabbit/%2f\"");
        assert_eq!(url.redacted(), "amqp://guest:***@rabbit/%2f");
        assert_eq!(url.expose(), "amqp://guest:s3cret@rabbit/%2f");
        assert_eq!(&*url, "amqp://guest:s3cret@rabbit/%2f");
        // Through Deref, to_string() is the real value, never the masked text.
        assert_eq!(url.to_string(), "amqp://guest:s3cret@rabbit/%2f");
    }

    proptest! {
        #[test]
        fn no_password_survives_printing(password in "[A-Za-z0-9._~!$&'()*+,;=:@/ -]{6,30}") {
            // Percent-encoded as a URL would carry it, and quoted as a key-value string would.
            let encoded: String = password
                .bytes()
                .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
                .collect();
            let quoted = password.replace('\\', "\\\\").replace('\'', "\\'");
            for url in [
                format!("postgres://user:{encoded}@db.example:5432/tasks"),
                format!("amqp://user:{encoded}@mq.example/%2f?heartbeat=5"),
                format!("postgres://user:{password}@db.example/tasks"),
                format!("host=db user=u password='{quoted}' dbname=tasks"),
                format!("postgres://db/tasks?password={encoded}"),
            ] {
                let printed = format!("{:?}", SecretUrl::from(url.as_str()));
                prop_assert!(!printed.contains(&password), "{printed}");
                prop_assert!(!printed.contains(&encoded), "{printed}");
            }
        }
    }
}
