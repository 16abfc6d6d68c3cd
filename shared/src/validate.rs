//! The rules an operation's fields must follow (SPEC §2), applied by the api to reject bad
//! input with the field named, and again by the worker, which trusts no message.

use crate::operation::{OpKind, OperationFields};

/// Longest title, in characters.
pub const MAX_TITLE_CHARS: usize = 500;
/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 10_000;

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
        let title = title.trim().to_string();
        if title.is_empty() {
            return Err(FieldError::new("title", "must not be blank"));
        }
        if title.chars().count() > MAX_TITLE_CHARS {
            return Err(FieldError::new(
                "title",
                format!("must be at most {MAX_TITLE_CHARS} characters"),
            ));
        }
        fields.title = Some(title);
    }
    if let Some(Some(description)) = &fields.description {
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
}
