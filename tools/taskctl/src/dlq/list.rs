//! `taskctl dlq list`: parked operations, newest failure first, with counts by kind of error.
//!
//! The filters apply to the rows and to the counts alike. Counts group errors by their kind:
//! the text with the attempt prefix removed and ids and numbers replaced (see [`error_kind`]),
//! so a thousand operations failing for one reason count as one line.

use std::{collections::BTreeMap, io::Write};

use serde_json::json;
use tasksync_shared::{Settings, topology::Topology};
use uuid::Uuid;

use crate::{
    CtlError,
    broker::Broker,
    emit, emit_json,
    records::{Filter, Parked, Records},
    table,
};

pub async fn list(
    settings: &Settings,
    filter: &Filter,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    let records = Records::new(settings)?;
    let parked = records.parked(filter).await?;
    let counts = group_by_kind(records.counts_by_error(filter).await?);
    let matching: i64 = counts.iter().map(|(_, n)| n).sum();
    let depth = parking_depth(settings).await?;
    if json {
        let counts: Vec<_> = counts
            .iter()
            .map(|(error, count)| json!({ "error": error, "count": count }))
            .collect();
        let body = json!({
            "parked": parked,
            "counts_by_error": counts,
            "records": matching,
            "queue_depth": depth,
        });
        return emit_json(out, &body);
    }
    print_table(&parked, &counts, out)?;
    if filter.is_empty() && i64::from(depth) != matching {
        emit(
            out,
            &format!(
                "\nnote: the parking queue holds {depth} message(s) and {matching} are recorded; \
                 the difference was dead-lettered by the broker (delivery limit) or is in flight"
            ),
        )?;
    }
    Ok(())
}

async fn parking_depth(settings: &Settings) -> Result<u32, CtlError> {
    let mut broker = Broker::connect(settings).await?;
    let queue = broker
        .inspect(&Topology::from_settings(settings).parking_queue())
        .await;
    broker.close().await;
    Ok(queue?.message_count())
}

fn print_table(
    parked: &[Parked],
    counts: &[(String, i64)],
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    let id = |v: Option<Uuid>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    let rows: Vec<Vec<String>> = parked
        .iter()
        .map(|p| {
            vec![
                p.message_id.clone(),
                id(p.task_id),
                p.user_id.clone().unwrap_or_else(|| "-".into()),
                p.attempts.to_string(),
                format!("{}s", p.age_seconds),
                p.last_error.clone(),
            ]
        })
        .collect();
    let headers = [
        "OP / MESSAGE ID",
        "TASK",
        "USER",
        "ATTEMPTS",
        "AGE",
        "LAST ERROR",
    ];
    emit(out, &table::render(&headers, &rows))?;
    emit(out, "")?;
    let counts: Vec<Vec<String>> = counts
        .iter()
        .map(|(error, n)| vec![n.to_string(), error.clone()])
        .collect();
    emit(out, &table::render(&["COUNT", "ERROR"], &counts))
}

/// Merges counts by exact text into counts by [`error_kind`], largest first.
fn group_by_kind(counts: Vec<(String, i64)>) -> Vec<(String, i64)> {
    let mut kinds: BTreeMap<String, i64> = BTreeMap::new();
    for (error, n) in counts {
        *kinds.entry(error_kind(&error)).or_default() += n;
    }
    let mut kinds: Vec<_> = kinds.into_iter().collect();
    kinds.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    kinds
}

/// The kind of an error text: without the worker's "failed N attempts; last error: " prefix,
/// with UUIDs as `<id>` and every word that starts with a digit (numbers, hex bytes, times)
/// as `<n>`.
pub fn error_kind(text: &str) -> String {
    let text = strip_attempt_prefix(text);
    let mut kind = String::with_capacity(text.len());
    let mut word = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':') {
            word.push(c);
        } else {
            push_word(&word, &mut kind);
            word.clear();
            kind.push(c);
        }
    }
    push_word(&word, &mut kind);
    kind
}

fn push_word(word: &str, kind: &mut String) {
    // A trailing '.' or ':' is punctuation, not part of the word.
    let body = word.trim_end_matches(['.', ':']);
    if body.len() == 36 && Uuid::parse_str(body).is_ok() {
        kind.push_str("<id>");
    } else if body.starts_with(|c: char| c.is_ascii_digit()) {
        kind.push_str("<n>");
    } else {
        kind.push_str(body);
    }
    kind.push_str(&word[body.len()..]);
}

fn strip_attempt_prefix(text: &str) -> &str {
    let Some(rest) = text.strip_prefix("failed ") else {
        return text;
    };
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    match rest[digits..].split_once(" attempts; last error: ") {
        Some(("", error)) if digits > 0 => error,
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kinds_drop_the_attempt_prefix_ids_and_numbers() {
        let a = "failed 4 attempts; last error: task 6f1c2d3e-0000-4000-8000-000000000001 \
                 locked for 1500 ms";
        let b = "failed 12 attempts; last error: task 0b9e8f7a-1111-4111-8111-111111111111 \
                 locked for 20 ms";
        assert_eq!(error_kind(a), "task <id> locked for <n> ms");
        assert_eq!(error_kind(a), error_kind(b));
        assert_eq!(
            error_kind("invalid byte sequence for encoding \"UTF8\": 0x00"),
            "invalid byte sequence for encoding \"UTF8\": <n>"
        );
        assert_eq!(error_kind("redelivered 3 times."), "redelivered <n> times.");
        assert_eq!(error_kind("failed hard"), "failed hard");
    }

    #[test]
    fn counts_merge_by_kind_largest_first() {
        let counts = vec![
            ("injected failure on attempt 1".to_string(), 2),
            ("injected failure on attempt 3".to_string(), 1),
            ("body is not JSON".to_string(), 2),
        ];
        assert_eq!(
            group_by_kind(counts),
            vec![
                ("injected failure on attempt <n>".to_string(), 3),
                ("body is not JSON".to_string(), 2),
            ]
        );
    }
}
