//! `taskctl devices [--user U] [--stale-after 24h]`: every device that named itself, with its
//! sync health (pushes, what became of them, `pending`, the latest pull and the time since),
//! the stale ones (no pull within `--stale-after`, or never) flagged.

use std::{io::Write, time::Duration};

use serde::Serialize;
use tasksync_shared::{Settings, device::DeviceFigures};

use crate::{CtlError, emit, emit_json, records::Records, table};

/// One listed device.
#[derive(Debug, Serialize)]
struct Listed {
    #[serde(flatten)]
    figures: DeviceFigures,
    /// No pull within the `--stale-after` window, or never.
    stale: bool,
}

/// Reads a duration such as `90s`, `30m`, `24h` or `7d` (a bare number is seconds).
pub fn parse_age(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a number and a unit, as 90s, 30m, 24h or 7d"))?;
    let seconds = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: the unit must be s, m, h or d")),
    };
    n.checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?}: too long"))
}

pub async fn devices(
    settings: &Settings,
    user: Option<&str>,
    stale_after: Duration,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    let limit = i64::try_from(stale_after.as_secs()).unwrap_or(i64::MAX);
    let listed: Vec<Listed> = Records::new(settings)?
        .devices(user)
        .await?
        .into_iter()
        .map(|figures| Listed {
            stale: figures.pull_lag_seconds.is_none_or(|lag| lag > limit),
            figures,
        })
        .collect();
    if json {
        let stale = listed.iter().filter(|l| l.stale).count();
        return emit_json(
            out,
            &serde_json::json!({
                "devices": listed,
                "stale_after_seconds": limit,
                "stale_count": stale,
            }),
        );
    }
    let when = |at: Option<chrono::DateTime<chrono::Utc>>| {
        at.map_or_else(
            || "-".to_string(),
            |at| at.format("%Y-%m-%d %H:%M:%S").to_string(),
        )
    };
    let rows: Vec<Vec<String>> = listed
        .iter()
        .map(|l| {
            let f = &l.figures;
            vec![
                f.user_id.clone(),
                f.device_id.clone(),
                when(f.last_push_at),
                f.ops_pushed.to_string(),
                f.pending.to_string(),
                f.ops_applied.to_string(),
                f.ops_conflicted.to_string(),
                f.ops_failed.to_string(),
                when(f.last_pull_at),
                f.pull_lag_seconds
                    .map_or_else(|| "-".to_string(), |s| format!("{s}s")),
                if l.stale { "stale" } else { "" }.to_string(),
            ]
        })
        .collect();
    let headers = [
        "USER",
        "DEVICE",
        "LAST PUSH (UTC)",
        "PUSHED",
        "PENDING",
        "APPLIED",
        "CONFLICTED",
        "FAILED",
        "LAST PULL (UTC)",
        "PULL LAG",
        "STALE",
    ];
    emit(out, &table::render(&headers, &rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_with_their_unit() {
        assert_eq!(parse_age("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_age("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_age("30m"), Ok(Duration::from_secs(1_800)));
        assert_eq!(parse_age("7d"), Ok(Duration::from_secs(604_800)));
        assert!(parse_age("h").is_err() && parse_age("3w").is_err() && parse_age("").is_err());
    }
}
