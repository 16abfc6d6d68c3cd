//! Reading JSON bodies strictly, and saying what is wrong with them in a client's words.
//!
//! - [`parse`] builds a [`Value`] like `serde_json` does, and also lists every key that appears
//!   twice in one object. serde_json keeps the last of them silently; we refuse them (a 400 on
//!   REST, an `error` item in a push), so that what a client meant is never guessed.
//! - [`describe`] turns a serde data error (`invalid type: integer `5`, expected a string`,
//!   `expected struct CreateTask`) into `<field>: must be a string, got a number`: the field is
//!   named, internal type names never reach the client.

use std::{cell::RefCell, fmt};

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// One step of the path to a value: an object key or an array index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Index(usize),
}

/// A path such as `items[3].data.title`, written as a client would look for it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct JsonPath(pub Vec<Step>);

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, step) in self.0.iter().enumerate() {
            match step {
                Step::Key(key) if i == 0 => write!(f, "{key}")?,
                Step::Key(key) => write!(f, ".{key}")?,
                Step::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// A parsed body and the paths of the keys it repeats (each path ends with the repeated key).
#[derive(Debug)]
pub struct Parsed {
    pub value: Value,
    pub duplicates: Vec<JsonPath>,
}

/// Parses one JSON document, listing its repeated keys. Syntax errors are serde_json's, which
/// name the line and column; the nesting limit is serde_json's (128).
pub fn parse(bytes: &[u8]) -> Result<Parsed, serde_json::Error> {
    let walk = RefCell::new(Walk::default());
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = Strict(&walk).deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(Parsed {
        value,
        duplicates: walk.into_inner().duplicates,
    })
}

#[derive(Default)]
struct Walk {
    path: Vec<Step>,
    duplicates: Vec<JsonPath>,
}

/// A seed that reads any JSON value, recording repeated keys in the shared [`Walk`].
#[derive(Clone, Copy)]
struct Strict<'a>(&'a RefCell<Walk>);

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            self.0.borrow_mut().path.push(Step::Index(items.len()));
            let next = seq.next_element_seed(self);
            self.0.borrow_mut().path.pop();
            match next? {
                Some(item) => items.push(item),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            self.0.borrow_mut().path.push(Step::Key(key.clone()));
            let value = map.next_value_seed(self);
            let mut walk = self.0.borrow_mut();
            if object.contains_key(&key) {
                let path = JsonPath(walk.path.clone());
                walk.duplicates.push(path);
            }
            walk.path.pop();
            drop(walk);
            object.insert(key, value?);
        }
        Ok(Value::Object(object))
    }
}

/// The message for a key that appears twice, naming it by its path.
pub fn repeated_key(path: &JsonPath) -> String {
    format!("{path}: appears more than once; a key may appear only once in a JSON object")
}

/// The kind of a JSON value, for messages.
pub fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "true or false",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// What a serde data error at `path` means, in a client's words, naming the field.
pub fn describe(path: &str, error: &serde_json::Error) -> String {
    let message = error.to_string();
    let field = if path.is_empty() || path == "." {
        None
    } else {
        Some(path)
    };
    if let Some(missing) = message.strip_prefix("missing field `") {
        let name = missing.split('`').next().unwrap_or_default();
        return format!("{name}: is required");
    }
    let field = field.unwrap_or("body");
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        let (got, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
        return format!(
            "{field}: must be {}, got {}",
            expectation(field, expected),
            kind(got)
        );
    }
    if message.starts_with("invalid value: ")
        || message.starts_with("invalid length ")
        || message.starts_with("UUID parsing failed")
        || message.starts_with("unknown variant ")
    {
        return format!("{field}: must be {}", expectation(field, &message));
    }
    format!("{field}: is not valid here")
}

/// What a field must be, from serde's "expected ..." text and, for ids, from its name.
fn expectation(field: &str, expected: &str) -> &'static str {
    let expected = expected.trim();
    if expected.contains("UUID") || expected.contains("uuid") || field == "id" {
        "a UUID"
    } else if expected == "a string" {
        "a string"
    } else if expected == "a boolean" {
        "true or false"
    } else if expected.starts_with("struct ") || expected.starts_with("a map") {
        "a JSON object"
    } else if expected.starts_with("a sequence") || expected.starts_with("tuple") {
        "a JSON array"
    } else if expected.contains("integer") || expected.starts_with("u") || expected.starts_with("i")
    {
        "a whole number"
    } else {
        "a valid value"
    }
}

/// The kind of JSON value serde found, from its "invalid type: ..." text.
fn kind(got: &str) -> &'static str {
    match got.split([' ', '`']).next().unwrap_or_default() {
        "integer" | "floating" => "a number",
        "string" | "character" => "a string",
        "boolean" => "true or false",
        "sequence" => "an array",
        "map" => "an object",
        "null" | "unit" => "null",
        _ => "another kind of value",
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;
    use uuid::Uuid;

    use super::*;

    #[test]
    fn repeated_keys_are_listed_with_their_path_and_the_value_is_kept() {
        let parsed = parse(
            br#"{"a": 1, "items": [{"id": 1, "data": {"t": 1, "t": 2}}, {"x": 0, "x": 0}], "a": 2}"#,
        )
        .unwrap();
        let found: Vec<String> = parsed.duplicates.iter().map(ToString::to_string).collect();
        assert_eq!(found, ["items[0].data.t", "items[1].x", "a"]);
        assert_eq!(parsed.value["items"][0]["id"], 1);
        assert!(
            parse(br#"{"a": 1, "b": {"a": 2}}"#)
                .unwrap()
                .duplicates
                .is_empty()
        );
        assert_eq!(
            parse(b"[1, 2.5, null, true, \"s\"]").unwrap().value,
            json!([1, 2.5, null, true, "s"])
        );
    }

    #[test]
    fn syntax_errors_and_trailing_garbage_are_errors() {
        assert!(parse(b"{\"a\": ").is_err());
        assert!(parse(b"{} {}").is_err());
        assert!(parse(&[b'['; 200]).is_err(), "nesting is bounded");
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Body {
        id: Option<Uuid>,
        title: Option<String>,
        completed: Option<bool>,
        count: Option<u32>,
    }

    fn error_of(value: Value) -> String {
        let e = serde_path_to_error::deserialize::<_, Body>(value).unwrap_err();
        describe(&e.path().to_string(), e.inner())
    }

    #[test]
    fn data_errors_name_the_field_and_never_an_internal_type() {
        let cases = [
            (json!({"title": 5}), "title: must be a string, got a number"),
            (
                json!({"completed": "yes"}),
                "completed: must be true or false, got a string",
            ),
            (json!({"id": "nope"}), "id: must be a UUID"),
            (json!({"id": 7}), "id: must be a UUID, got a number"),
            (json!({"count": -1}), "count: must be a whole number"),
            (
                json!({"title": ["x"]}),
                "title: must be a string, got an array",
            ),
        ];
        for (value, expected) in cases {
            let message = error_of(value.clone());
            assert!(message.starts_with(expected), "{value}: {message}");
            assert!(!message.contains("Body"), "{message}");
        }
    }
}
