//! Where the bench may point, and as whom it speaks.

use anyhow::{Context, bail};
use url::{Host, Url};

/// Parses `base` and refuses a host other than this machine unless `allow_remote`: a load
/// generator aimed at somebody else's server by a typo is an attack.
pub fn checked_base(base: &str, allow_remote: bool) -> anyhow::Result<Url> {
    let url = Url::parse(base).with_context(|| format!("--base-url: not a URL: {base}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        bail!("--base-url: scheme must be http or https");
    }
    let local = match url.host() {
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip == std::net::Ipv4Addr::LOCALHOST,
        Some(Host::Ipv6(ip)) => ip == std::net::Ipv6Addr::LOCALHOST,
        None => false,
    };
    if !local && !allow_remote {
        bail!(
            "--base-url: {base} is not 127.0.0.1, localhost or ::1; pass --allow-remote to load it"
        );
    }
    Ok(url)
}

/// The bearer token: `--token`, else one minted for `user` with `JWT_SECRET` (valid for a day,
/// with `JWT_ISSUER` / `JWT_AUDIENCE` when set, as the api checks them), else none (the api in
/// development mode).
pub fn bearer(token: Option<&str>, user: &str) -> anyhow::Result<Option<String>> {
    if let Some(token) = token.filter(|t| !t.is_empty()) {
        return Ok(Some(token.to_string()));
    }
    let Some(secret) = std::env::var("JWT_SECRET")
        .ok()
        .filter(|s| !s.trim().is_empty())
    else {
        return Ok(None);
    };
    let set = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let (issuer, audience) = (set("JWT_ISSUER"), set("JWT_AUDIENCE"));
    let token = api::auth::mint::hs256_token(
        secret.as_bytes(),
        user,
        86_400,
        issuer.as_deref(),
        audience.as_deref(),
    )
    .context("mint a token with JWT_SECRET")?;
    Ok(Some(token))
}

#[cfg(test)]
mod tests {
    use super::checked_base;

    #[test]
    fn only_this_machine_by_default() {
        for ok in [
            "http://127.0.0.1:3000",
            "http://localhost:1",
            "http://[::1]:3000/",
        ] {
            assert!(checked_base(ok, false).is_ok(), "{ok}");
        }
        for no in [
            "http://10.0.0.1:3000",
            "http://example.com",
            "http://127.0.0.2",
            "ftp://localhost",
        ] {
            assert!(checked_base(no, false).is_err(), "{no}");
        }
        assert!(checked_base("http://example.com", true).is_ok());
    }
}
