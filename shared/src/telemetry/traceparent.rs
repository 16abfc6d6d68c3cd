//! W3C Trace Context (`traceparent`): read strictly, written in version `00`, carried in the
//! AMQP headers of each published operation so that the api's and the worker's log lines of one
//! operation share its trace id.
//!
//! A value that breaks the format in any way (wrong length, upper-case hex, an all-zero id,
//! version `ff`) is treated as absent: the api starts a new trace rather than refuse a request
//! for a header that only serves diagnosis.

use std::fmt;

use lapin::types::{AMQPValue, FieldTable, LongString};
use uuid::Uuid;

/// The header's name, in HTTP requests and responses and in AMQP message headers.
pub const HEADER: &str = "traceparent";

/// A 16-byte trace id, shown as 32 lower-case hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TraceId(pub [u8; 16]);

/// An 8-byte span (parent) id, shown as 16 lower-case hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SpanId(pub [u8; 8]);

/// One `traceparent` value: the trace, the span that sent it, and the trace flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: TraceId,
    pub parent_id: SpanId,
    /// Only the `sampled` bit (`01`) is defined; others are dropped when passed on.
    pub flags: u8,
}

const SAMPLED: u8 = 0x01;

impl TraceParent {
    /// A new trace: random trace and span ids, sampled.
    pub fn new_root() -> Self {
        Self {
            trace_id: TraceId(*Uuid::new_v4().as_bytes()),
            parent_id: new_span_id(),
            flags: SAMPLED,
        }
    }

    /// The same trace, from a new span of ours (the one that passes it on).
    pub fn child(&self) -> Self {
        Self {
            trace_id: self.trace_id,
            parent_id: new_span_id(),
            flags: self.flags & SAMPLED,
        }
    }

    /// Parses a header value, or `None` when it is not a valid `traceparent`. Versions above
    /// `00` are read by their first four fields, as the recommendation asks.
    pub fn parse(value: &str) -> Option<Self> {
        let bytes = value.as_bytes();
        if bytes.len() < 55 {
            return None;
        }
        let version = hex_byte(&bytes[0..2])?;
        match version {
            0x00 if bytes.len() != 55 => return None,
            0xff => return None,
            // A later version may append fields, after a dash.
            _ if bytes.len() > 55 && bytes[55] != b'-' => return None,
            _ => {}
        }
        if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return None;
        }
        let trace_id = TraceId(hex_array(&bytes[3..35])?);
        let parent_id = SpanId(hex_array(&bytes[36..52])?);
        let flags = hex_byte(&bytes[53..55])?;
        if trace_id.0 == [0; 16] || parent_id.0 == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// The value found in AMQP message headers, if any and valid.
    pub fn from_amqp_headers(headers: Option<&FieldTable>) -> Option<Self> {
        match headers?.inner().get(HEADER)? {
            AMQPValue::LongString(value) => {
                Self::parse(std::str::from_utf8(value.as_bytes()).ok()?)
            }
            AMQPValue::ShortString(value) => Self::parse(value.as_str()),
            _ => None,
        }
    }

    /// Puts this value into AMQP message headers (replacing one already there).
    pub fn put_in(&self, headers: &mut FieldTable) {
        headers.insert(
            HEADER.into(),
            AMQPValue::LongString(LongString::from(self.to_string().into_bytes())),
        );
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            self.trace_id,
            self.parent_id,
            self.flags & SAMPLED
        )
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// Eight random bytes (a v4 uuid's first four and last four, which carry no version or variant
/// bits), never all zero.
fn new_span_id() -> SpanId {
    loop {
        let random = Uuid::new_v4();
        let bytes = random.as_bytes();
        let mut id = [0; 8];
        id[..4].copy_from_slice(&bytes[..4]);
        id[4..].copy_from_slice(&bytes[12..]);
        if id != [0; 8] {
            return SpanId(id);
        }
    }
}

fn hex_array<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    if digits.len() != 2 * N {
        return None;
    }
    let mut out = [0; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = hex_byte(pair)?;
    }
    Some(out)
}

/// Two lower-case hex digits (the format allows no upper case).
fn hex_byte(pair: &[u8]) -> Option<u8> {
    let digit = |d: u8| match d {
        b'0'..=b'9' => Some(d - b'0'),
        b'a'..=b'f' => Some(d - b'a' + 10),
        _ => None,
    };
    match pair {
        [high, low] => Some(digit(*high)? << 4 | digit(*low)?),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_value_reads_and_writes_back_the_same() {
        let parsed = TraceParent::parse(VALID).unwrap();
        assert_eq!(
            parsed.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(parsed.parent_id.to_string(), "00f067aa0ba902b7");
        assert_eq!(parsed.to_string(), VALID);
    }

    #[test]
    fn anything_off_the_format_is_refused() {
        for invalid in [
            "",
            "garbage",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
        ] {
            assert_eq!(TraceParent::parse(invalid), None, "{invalid:?}");
        }
    }

    #[test]
    fn a_later_version_is_read_by_its_first_fields() {
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes";
        let parsed = TraceParent::parse(later).unwrap();
        assert_eq!(parsed.to_string(), VALID);
        assert_eq!(
            TraceParent::parse(&later.replace("01-what", "01what")),
            None
        );
    }

    #[test]
    fn a_child_keeps_the_trace_and_takes_a_new_span() {
        let parent = TraceParent::parse(VALID).unwrap();
        let child = parent.child();
        assert_eq!(child.trace_id, parent.trace_id);
        assert_ne!(child.parent_id, parent.parent_id);
        assert_ne!(TraceParent::new_root().trace_id, parent.trace_id);
        assert!(TraceParent::parse(&TraceParent::new_root().to_string()).is_some());
    }

    #[test]
    fn it_travels_in_amqp_headers() {
        let parent = TraceParent::parse(VALID).unwrap();
        let mut headers = FieldTable::default();
        parent.put_in(&mut headers);
        assert_eq!(TraceParent::from_amqp_headers(Some(&headers)), Some(parent));
        assert_eq!(TraceParent::from_amqp_headers(None), None);
    }
}
