//! The rules an operation's fields must follow (SPEC §2), applied by the api to reject bad
//! input with the field named, and again by the worker, which trusts no message.
//!
//! - Text ([`normalize`]): no NUL or other control character except tab, CR and LF (Postgres
//!   refuses NUL in text and jsonb, so such a write could never be applied nor recorded); a title
//!   made only of whitespace or invisible characters ([`is_invisible`]) is blank.
//! - Times ([`stamp`], [`parse_stamp`]): a client timestamp must be RFC 3339 with a four-digit
//!   year once in UTC, and not before the Unix epoch: [`EARLIEST_STAMP`] to [`LATEST_STAMP`].

use chrono::{DateTime, Utc};

use crate::operation::{OpKind, OperationFields};

/// Longest title, in characters.
pub const MAX_TITLE_CHARS: usize = 500;
/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 10_000;
/// Earliest client timestamp accepted: 1970-01-01T00:00:00Z.
pub const EARLIEST_STAMP: DateTime<Utc> = DateTime::UNIX_EPOCH;
/// Latest client timestamp accepted: 9999-12-31T23:59:59.999999Z, the last instant RFC 3339
/// (four-digit years) can write in UTC at the microsecond precision Postgres keeps.
pub const LATEST_STAMP: DateTime<Utc> =
    match DateTime::from_timestamp_micros(253_402_300_799_999_999) {
        Some(t) => t,
        None => DateTime::UNIX_EPOCH,
    };

/// A field that breaks a rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// Checks the fields of an operation of `kind` and returns them normalized (title trimmed).
pub fn normalize(kind: OpKind, mut fields: OperationFields) -> Result<OperationFields, FieldError> {
    if let Some(title) = fields.title.take() {
        fields.title = Some(title_rule(&title)?);
    }
    if let Some(Some(description)) = &fields.description {
        text_rule("description", description)?;
        if description.chars().count() > MAX_DESCRIPTION_CHARS {
            return Err(FieldError::new(
                "description",
                format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
            ));
        }
    }
    match kind {
        OpKind::Create if fields.title.is_none() => Err(FieldError::new("title", "is required")),
        OpKind::Update
            if fields.title.is_none()
                && fields.description.is_none()
                && fields.completed.is_none() =>
        {
            Err(FieldError::new(
                "title",
                "an update must set at least one of title, description, completed",
            ))
        }
        _ => Ok(fields),
    }
}

/// The title, trimmed, if it is one.
fn title_rule(title: &str) -> Result<String, FieldError> {
    text_rule("title", title)?;
    let title = title.trim();
    if title.chars().all(|c| c.is_whitespace() || is_invisible(c)) {
        return Err(FieldError::new(
            "title",
            "must not be blank (whitespace or invisible characters only)",
        ));
    }
    if title.chars().count() > MAX_TITLE_CHARS {
        return Err(FieldError::new(
            "title",
            format!("must be at most {MAX_TITLE_CHARS} characters"),
        ));
    }
    Ok(title.to_string())
}

/// Refuses NUL and the other control characters (C0, DEL, C1) but tab, CR and LF.
fn text_rule(field: &'static str, text: &str) -> Result<(), FieldError> {
    match text
        .chars()
        .enumerate()
        .find(|(_, c)| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    {
        Some((at, c)) => Err(FieldError::new(
            field,
            format!(
                "must not contain control characters other than tab, CR and LF (found U+{:04X} at character {})",
                u32::from(c),
                at + 1
            ),
        )),
        None => Ok(()),
    }
}

/// Characters that render as nothing: zero-width space, non-joiner and joiner, word joiner and
/// the invisible operators, the byte-order mark (zero-width no-break space), the soft hyphen and
/// the Mongolian vowel separator. A title of these (and whitespace) only is blank.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}' | '\u{180E}' | '\u{200B}'..='\u{200D}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}'
    )
}

/// Checks that a client timestamp lies between [`EARLIEST_STAMP`] and [`LATEST_STAMP`].
pub fn stamp(field: &'static str, at: DateTime<Utc>) -> Result<DateTime<Utc>, FieldError> {
    if at < EARLIEST_STAMP {
        Err(FieldError::new(
            field,
            "must not be before 1970-01-01T00:00:00Z",
        ))
    } else if at > LATEST_STAMP {
        Err(FieldError::new(
            field,
            "must not be after 9999-12-31T23:59:59.999999Z",
        ))
    } else {
        Ok(at)
    }
}

/// Reads an RFC 3339 timestamp sent by a client, in UTC, within [`stamp`]'s bounds.
pub fn parse_stamp(field: &'static str, text: &str) -> Result<DateTime<Utc>, FieldError> {
    let at = DateTime::parse_from_rfc3339(text).map_err(|e| {
        FieldError::new(
            field,
            format!("must be an RFC 3339 timestamp such as 2026-01-31T09:30:00Z ({e})"),
        )
    })?;
    stamp(field, at.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(title: Option<&str>) -> OperationFields {
        OperationFields {
            title: title.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn titles_are_trimmed_and_must_not_be_blank_or_too_long() {
        let ok = normalize(OpKind::Create, fields(Some("  dance "))).unwrap();
        assert_eq!(ok.title.as_deref(), Some("dance"));
        assert_eq!(
            normalize(OpKind::Create, fields(Some(" \t")))
                .unwrap_err()
                .field,
            "title"
        );
        let long = "x".repeat(MAX_TITLE_CHARS + 1);
        assert_eq!(
            normalize(OpKind::Update, fields(Some(&long)))
                .unwrap_err()
                .field,
            "title"
        );
    }

    #[test]
    fn a_title_of_invisible_characters_and_unicode_whitespace_is_blank() {
        for blank in [
            "\u{200B}",
            "\u{200B}\u{200C}\u{200D}",
            " \u{2060} \u{FEFF}\u{00A0}",
            "\u{3000}\u{2003}\u{200B}",
            "\u{00AD}\u{2028}",
        ] {
            let e = normalize(OpKind::Create, fields(Some(blank))).unwrap_err();
            assert_eq!(e.field, "title", "{blank:?}");
            assert!(e.message.contains("blank"), "{e}");
        }
        let kept = normalize(OpKind::Create, fields(Some("\u{200B}a\u{200D}"))).unwrap();
        assert_eq!(kept.title.as_deref(), Some("\u{200B}a\u{200D}"));
    }

    #[test]
    fn control_characters_other_than_tab_cr_lf_are_refused_in_title_and_description() {
        for bad in [
            "nul\u{0}title",
            "bell\u{7}",
            "esc\u{1B}[31m",
            "del\u{7F}",
            "c1\u{85}",
        ] {
            let e = normalize(OpKind::Create, fields(Some(bad))).unwrap_err();
            assert_eq!(e.field, "title", "{bad:?}");
            assert!(e.message.contains("control characters"), "{e}");
            let described = OperationFields {
                description: Some(Some(bad.into())),
                ..Default::default()
            };
            let e = normalize(OpKind::Update, described).unwrap_err();
            assert_eq!(e.field, "description", "{bad:?}");
        }
        let e = normalize(OpKind::Create, fields(Some("nul\u{0}title"))).unwrap_err();
        assert!(e.message.contains("U+0000 at character 4"), "{e}");
        let lines = OperationFields {
            title: Some("a\tb".into()),
            description: Some(Some("line 1\r\nline 2\n\tend".into())),
            completed: None,
        };
        assert!(normalize(OpKind::Create, lines).is_ok());
    }

    #[test]
    fn a_create_needs_a_title_and_an_update_needs_a_field() {
        assert_eq!(
            normalize(OpKind::Create, fields(None)).unwrap_err().field,
            "title"
        );
        assert!(normalize(OpKind::Update, fields(None)).is_err());
        assert!(normalize(OpKind::Delete, fields(None)).is_ok());
        let clear = OperationFields {
            description: Some(None),
            ..Default::default()
        };
        assert!(normalize(OpKind::Update, clear).is_ok());
    }

    #[test]
    fn long_descriptions_are_refused() {
        let f = OperationFields {
            title: Some("t".into()),
            description: Some(Some("d".repeat(MAX_DESCRIPTION_CHARS + 1))),
            completed: None,
        };
        assert_eq!(
            normalize(OpKind::Create, f).unwrap_err().field,
            "description"
        );
    }

    #[test]
    fn stamps_must_lie_between_the_epoch_and_the_last_four_digit_year() {
        let ok = parse_stamp("created_at", "2026-01-02T03:04:05.5+01:00").unwrap();
        assert_eq!(ok.to_rfc3339(), "2026-01-02T02:04:05.500+00:00");
        assert_eq!(
            parse_stamp("at", "1970-01-01T00:00:00Z").unwrap(),
            EARLIEST_STAMP
        );
        assert_eq!(
            LATEST_STAMP.to_rfc3339(),
            "9999-12-31T23:59:59.999999+00:00"
        );
        for (text, bound) in [
            ("0000-01-01T00:00:00+23:59", "1970"),
            ("1969-12-31T23:59:59.999999Z", "1970"),
            ("1970-01-01T00:30:00+01:00", "1970"),
            ("9999-12-31T23:59:59-00:01", "9999"),
        ] {
            let e = parse_stamp("data.updated_at", text).unwrap_err();
            assert_eq!(e.field, "data.updated_at");
            assert!(e.message.contains(bound), "{text}: {e}");
        }
        let e = parse_stamp("created_at", "yesterday").unwrap_err();
        assert!(e.message.contains("RFC 3339"), "{e}");
        assert!(stamp("x", LATEST_STAMP).is_ok());
    }
}
