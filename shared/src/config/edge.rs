//! What the api lets through at its edge (SPEC §8 "Limits and back-pressure"): the per-user
//! token bucket (`RATE_LIMIT_RPS`, `RATE_LIMIT_BURST`), the work-queue high water
//! (`QUEUE_HIGH_WATER`) and the browser origins CORS allows (`CORS_ALLOWED_ORIGINS`).
//!
//! Origins are checked at start like connection strings: one that no browser could ever send
//! (a path, a trailing slash, no host, `null`) stops the process naming the variable, instead
//! of silently never matching.

use std::num::NonZeroU32;

use super::ConfigError;

/// The per-user token bucket when authentication is on and `RATE_LIMIT_RPS` is unset: room for
/// an offline device's sync (a push, a few pulls, the feed) and a busy browser tab, never for a
/// flood. Development mode has no default limit (SPEC §8).
pub const DEFAULT_AUTHENTICATED_RATE: RateLimit = RateLimit {
    per_second: NonZeroU32::new(50).unwrap(),
    burst: NonZeroU32::new(100).unwrap(),
};

/// Default `QUEUE_HIGH_WATER`.
pub const DEFAULT_QUEUE_HIGH_WATER: u32 = 100_000;

/// Settings of the api's edge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdgeSettings {
    /// `RATE_LIMIT_RPS` / `RATE_LIMIT_BURST`: the per-user token bucket; `None` (RPS 0, the
    /// default) is off. A burst of 0 (the default) is the rate.
    pub rate_limit: Option<RateLimit>,
    /// `QUEUE_HIGH_WATER`: ready messages in the work queue above which writes get 429;
    /// `None` (0) is off.
    pub queue_high_water: Option<NonZeroU32>,
    /// `CORS_ALLOWED_ORIGINS`: which browser origins may call the api.
    pub cors_allowed_origins: AllowedOrigins,
}

impl Default for EdgeSettings {
    fn default() -> Self {
        Self {
            rate_limit: None,
            queue_high_water: NonZeroU32::new(DEFAULT_QUEUE_HIGH_WATER),
            cors_allowed_origins: AllowedOrigins::None,
        }
    }
}

/// A token bucket: `per_second` tokens refill each second, up to `burst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

/// Browser origins allowed to call the api (CORS).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// No CORS headers at all: browsers keep other origins out (the default).
    None,
    /// `*`: any origin, never with credentials (the api uses bearer tokens, not cookies).
    Any,
    /// Exact origins, as browsers send them: `scheme://host[:port]`, lowercase, without the
    /// scheme's default port.
    List(Vec<String>),
}

/// The variables as read (numbers parsed) by `Settings::from_lookup`, which names every
/// variable it reads in one place.
#[derive(Debug, Default)]
pub(super) struct EdgeVariables {
    /// A JWT key is configured: callers are told apart, and an unset rate takes
    /// [`DEFAULT_AUTHENTICATED_RATE`].
    pub authenticated: bool,
    pub rate_limit_rps: Option<u32>,
    pub rate_limit_burst: Option<u32>,
    pub queue_high_water: Option<u32>,
    pub cors_allowed_origins: Option<String>,
}

impl EdgeSettings {
    pub(super) fn from_variables(vars: EdgeVariables) -> Result<Self, ConfigError> {
        let d = Self::default();
        let rate_limit = match vars.rate_limit_rps {
            None if vars.authenticated => Some(DEFAULT_AUTHENTICATED_RATE),
            rps => NonZeroU32::new(rps.unwrap_or(0)).map(|per_second| RateLimit {
                per_second,
                // Unset or 0: a second's worth of requests at once.
                burst: vars
                    .rate_limit_burst
                    .and_then(NonZeroU32::new)
                    .unwrap_or(per_second),
            }),
        };
        let queue_high_water = match vars.queue_high_water {
            Some(n) => NonZeroU32::new(n),
            None => d.queue_high_water,
        };
        let cors_allowed_origins = match vars.cors_allowed_origins {
            Some(value) => allowed_origins(&value)?,
            None => d.cors_allowed_origins,
        };
        Ok(Self {
            rate_limit,
            queue_high_water,
            cors_allowed_origins,
        })
    }
}

/// Parses `CORS_ALLOWED_ORIGINS`: empty is none, `*` alone is any, else a comma-separated list
/// of origins.
fn allowed_origins(value: &str) -> Result<AllowedOrigins, ConfigError> {
    let err = |reason: String| ConfigError {
        name: "CORS_ALLOWED_ORIGINS",
        value: value.to_string(),
        reason,
    };
    let parts: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if parts.is_empty() {
        return Ok(AllowedOrigins::None);
    }
    if parts.contains(&"*") {
        return if parts.len() == 1 {
            Ok(AllowedOrigins::Any)
        } else {
            Err(err(
                "`*` allows every origin and cannot be combined with others".into(),
            ))
        };
    }
    let mut origins = Vec::with_capacity(parts.len());
    for part in parts {
        let origin = origin(part).map_err(|reason| err(format!("{part:?}: {reason}")))?;
        if !origins.contains(&origin) {
            origins.push(origin);
        }
    }
    Ok(AllowedOrigins::List(origins))
}

/// One origin in the form browsers send in `Origin`.
fn origin(text: &str) -> Result<String, String> {
    let expected = "expected an origin such as https://app.example.com or http://localhost:5173";
    let url = url::Url::parse(text).map_err(|e| format!("{e}; {expected}"))?;
    let host = match url.host_str() {
        Some(host) if !host.is_empty() => host.to_ascii_lowercase(),
        _ => return Err(format!("names no host; {expected}")),
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err("an origin has no user or password".into());
    }
    // `Url` turns "https://a.example" into "https://a.example/": only an explicit path fails.
    let rest = &text[text.find("://").map_or(0, |i| i + 3)..];
    if rest.contains(['/', '?', '#']) {
        return Err(format!(
            "an origin has no path, query or fragment (not even a trailing '/'); {expected}"
        ));
    }
    Ok(match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Through `Settings::from_lookup`, as the services read them.
    fn from(vars: &[(&str, &str)]) -> Result<EdgeSettings, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        crate::Settings::from_lookup(|name| map.get(name).cloned()).map(|s| s.edge)
    }

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn defaults_are_no_rate_limit_a_high_water_and_no_cors() {
        let s = from(&[]).unwrap();
        assert_eq!(s, EdgeSettings::default());
        assert_eq!(s.rate_limit, None);
        let authenticated = EdgeSettings::from_variables(EdgeVariables {
            authenticated: true,
            ..EdgeVariables::default()
        })
        .unwrap();
        assert_eq!(authenticated.rate_limit, Some(DEFAULT_AUTHENTICATED_RATE));
        let turned_off = EdgeSettings::from_variables(EdgeVariables {
            authenticated: true,
            rate_limit_rps: Some(0),
            ..EdgeVariables::default()
        })
        .unwrap();
        assert_eq!(turned_off.rate_limit, None);
        assert_eq!(s.queue_high_water, Some(nz(100_000)));
        assert_eq!(s.cors_allowed_origins, AllowedOrigins::None);
    }

    #[test]
    fn the_burst_defaults_to_the_rate_and_zero_turns_limits_off() {
        let limit = |vars: &[(&str, &str)]| from(vars).unwrap().rate_limit;
        assert_eq!(
            limit(&[("RATE_LIMIT_RPS", "5")]),
            Some(RateLimit {
                per_second: nz(5),
                burst: nz(5)
            })
        );
        assert_eq!(
            limit(&[("RATE_LIMIT_RPS", "5"), ("RATE_LIMIT_BURST", "20")]),
            Some(RateLimit {
                per_second: nz(5),
                burst: nz(20)
            })
        );
        assert_eq!(
            limit(&[("RATE_LIMIT_RPS", "0"), ("RATE_LIMIT_BURST", "9")]),
            None
        );
        assert_eq!(
            limit(&[("RATE_LIMIT_RPS", "5"), ("RATE_LIMIT_BURST", "0")]),
            Some(RateLimit {
                per_second: nz(5),
                burst: nz(5)
            })
        );
        assert_eq!(
            from(&[("RATE_LIMIT_BURST", "x")]).unwrap_err().name,
            "RATE_LIMIT_BURST"
        );
        assert_eq!(
            from(&[("RATE_LIMIT_RPS", "-1")]).unwrap_err().name,
            "RATE_LIMIT_RPS"
        );
        let off = from(&[("QUEUE_HIGH_WATER", "0")]).unwrap();
        assert_eq!(off.queue_high_water, None);
        assert_eq!(
            from(&[("QUEUE_HIGH_WATER", "x")]).unwrap_err().name,
            "QUEUE_HIGH_WATER"
        );
    }

    #[test]
    fn origins_are_read_as_browsers_send_them() {
        let origins = |v: &str| {
            from(&[("CORS_ALLOWED_ORIGINS", v)])
                .unwrap()
                .cors_allowed_origins
        };
        assert_eq!(
            origins(" https://App.Example.com, http://localhost:5173 ,https://x.example:443"),
            AllowedOrigins::List(vec![
                "https://app.example.com".into(),
                "http://localhost:5173".into(),
                "https://x.example".into(),
            ])
        );
        assert_eq!(origins("*"), AllowedOrigins::Any);
        assert_eq!(origins(""), AllowedOrigins::None);
        assert_eq!(origins(" , "), AllowedOrigins::None);
    }

    #[test]
    fn an_origin_no_browser_sends_stops_the_start_naming_the_variable() {
        for bad in [
            "app.example.com",
            "https://app.example.com/",
            "https://app.example.com/path",
            "https://app.example.com?q",
            "https://user@app.example.com",
            "null",
            "*, https://app.example.com",
            "https://ok.example, nope",
        ] {
            let e = from(&[("CORS_ALLOWED_ORIGINS", bad)]).unwrap_err();
            assert_eq!(e.name, "CORS_ALLOWED_ORIGINS", "{bad}");
            assert!(e.to_string().contains("CORS_ALLOWED_ORIGINS="), "{e}");
        }
    }
}
