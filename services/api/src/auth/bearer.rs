//! Reading `Authorization: Bearer <token>` (RFC 6750 §2.1) from a request's headers, whatever
//! they hold: no header or another scheme is "missing" (the client did not try a bearer
//! token); anything else that is not one well-formed token is "invalid".

use axum::http::{HeaderMap, header::AUTHORIZATION};

use super::Refusal;

/// Longest token read; a real one is a few hundred bytes to a few KiB.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

pub fn token(headers: &HeaderMap) -> Result<&str, Refusal> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(if headers.contains_key(AUTHORIZATION) {
            Refusal::invalid("more than one Authorization header")
        } else {
            Refusal::Missing {
                other_scheme: false,
            }
        });
    };
    let value = value
        .to_str()
        .map_err(|_| Refusal::invalid("the Authorization header is not ASCII text"))?
        .trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if value.is_empty() {
        return Err(Refusal::Missing {
            other_scheme: false,
        });
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Refusal::Missing { other_scheme: true });
    }
    let token = rest.trim();
    if token.is_empty() {
        return Err(Refusal::invalid("the bearer token is empty"));
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Refusal::invalid("the bearer token is too long"));
    }
    if !token.bytes().all(is_token68) {
        return Err(Refusal::invalid("malformed bearer token"));
    }
    Ok(token)
}

/// RFC 7235 token68 characters (a JWT uses a subset of them).
fn is_token68(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=')
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use axum::http::HeaderValue;

    fn read(values: &[&[u8]]) -> Result<String, Refusal> {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(AUTHORIZATION, HeaderValue::from_bytes(v).unwrap());
        }
        token(&headers).map(str::to_string)
    }

    #[test]
    fn whatever_the_header_holds_it_is_a_token_or_a_refusal() {
        assert_eq!(read(&[b"Bearer a.b.c"]).unwrap(), "a.b.c");
        assert_eq!(read(&[b"bearer   a.b.c "]).unwrap(), "a.b.c");
        assert!(matches!(
            read(&[]),
            Err(Refusal::Missing {
                other_scheme: false
            })
        ));
        assert!(matches!(read(&[b""]), Err(Refusal::Missing { .. })));
        assert!(matches!(
            read(&[b"Basic dXNlcjpwdw=="]),
            Err(Refusal::Missing { other_scheme: true })
        ));
        for bad in [
            &b"Bearer"[..],
            b"Bearer ",
            b"Bearer a b",
            b"Bearer \xc3\xa9t\xc3\xa9",
            b"Bearer a\"b",
        ] {
            assert!(matches!(read(&[bad]), Err(Refusal::Invalid(_))), "{bad:?}");
        }
        assert!(matches!(
            read(&[b"Bearer a", b"Bearer b"]),
            Err(Refusal::Invalid(_))
        ));
        let huge = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        assert!(matches!(read(&[huge.as_bytes()]), Err(Refusal::Invalid(_))));
    }
}
