//! Visitor session tokens: what a browser holds instead of a key.
//!
//! A customer's backend (with an agent or visitor key) asks for a session
//! for one visitor; the browser then acts as that visitor only, until the
//! token expires or is revoked. A token reads `cvs_<claims>.<tag>`: the
//! claims (JSON, base64url) say whose session it is and until when, and the
//! tag is their HMAC-SHA256 under the server's secret, so checking a token
//! reads no storage. Revocation is kept apart (by session id), since a
//! signature cannot be taken back. The secret and the clock come in from the
//! caller, so this stays free of I/O.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::{Micros, WorkspaceId, values::VisitorId};

const PREFIX: &str = "cvs_";
/// Longest token accepted: claims of the longest ids fit well inside it.
const MAX_TOKEN_BYTES: usize = 2048;

/// A session's life when the request names none.
pub const DEFAULT_TTL_SECONDS: i64 = 60 * 60;
/// The shortest life a session may ask for.
pub const MIN_TTL_SECONDS: i64 = 60;
/// The longest life a session may ask for.
pub const MAX_TTL_SECONDS: i64 = 24 * 60 * 60;

/// What a token says, and what the server signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionClaims {
    /// The only workspace the session sees.
    #[serde(rename = "w")]
    pub workspace_id: WorkspaceId,
    /// Names the session for revocation and logs (16 hex digits).
    #[serde(rename = "s")]
    pub session_id: String,
    /// The one visitor the session acts as.
    #[serde(rename = "v")]
    pub visitor_id: VisitorId,
    /// When the token stops working.
    #[serde(rename = "e")]
    pub expire_time: Micros,
    /// The key that asked for it: revoking that key ends the session too.
    #[serde(rename = "k")]
    pub issuer_key_id: String,
}

/// Why a presented token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionTokenError {
    /// Not a token of this form, or its tag does not match its claims.
    #[error("the visitor session token is not valid (malformed or altered)")]
    Invalid,
    /// Past its expiry.
    #[error("the visitor session token has expired; ask the site's backend for a new one")]
    Expired,
}

/// True when `token` has the form of a session token (rather than a key).
pub fn is_session_token(token: &str) -> bool {
    token.starts_with(PREFIX)
}

/// The token for `claims`, signed with `secret`.
pub fn sign(secret: &[u8], claims: &SessionClaims) -> String {
    let body = URL_SAFE_NO_PAD.encode(
        serde_json::to_vec(claims).expect("claims of strings and integers always serialise"),
    );
    let tag = URL_SAFE_NO_PAD.encode(tag(secret, body.as_bytes()));
    format!("{PREFIX}{body}.{tag}")
}

/// The claims of `token` if `secret` signed it and it has not expired at
/// `now`. The tag is compared in constant time, before the claims are read.
pub fn verify(secret: &[u8], token: &str, now: Micros) -> Result<SessionClaims, SessionTokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(SessionTokenError::Invalid);
    }
    let rest = token
        .strip_prefix(PREFIX)
        .ok_or(SessionTokenError::Invalid)?;
    let (body, presented_tag) = rest.split_once('.').ok_or(SessionTokenError::Invalid)?;
    let presented_tag = URL_SAFE_NO_PAD
        .decode(presented_tag)
        .map_err(|_| SessionTokenError::Invalid)?;
    let mut mac = mac(secret);
    mac.update(body.as_bytes());
    mac.verify_slice(&presented_tag)
        .map_err(|_| SessionTokenError::Invalid)?;
    let claims: SessionClaims = URL_SAFE_NO_PAD
        .decode(body)
        .ok()
        .and_then(|json| serde_json::from_slice(&json).ok())
        .ok_or(SessionTokenError::Invalid)?;
    // Signed by us, so valid when made; checked again all the same.
    VisitorId::parse(claims.visitor_id.as_str()).map_err(|_| SessionTokenError::Invalid)?;
    if now >= claims.expire_time {
        return Err(SessionTokenError::Expired);
    }
    Ok(claims)
}

fn mac(secret: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes a key of any length")
}

fn tag(secret: &[u8], body: &[u8]) -> [u8; 32] {
    let mut mac = mac(secret);
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// Session ids: 16 lowercase hex digits, as sessions are made.
pub fn check_session_id(value: &str) -> Result<(), String> {
    let ok = value.len() == 16
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        Ok(())
    } else if value.is_empty() {
        Err("is required".into())
    } else {
        Err("is not a session id (16 hex digits, as CreateVisitorSession gave it)".into())
    }
}

/// The session's life asked for, in seconds (None: the default), checked
/// against the bounds.
pub fn ttl_seconds(asked: Option<i64>) -> Result<i64, String> {
    match asked {
        None => Ok(DEFAULT_TTL_SECONDS),
        Some(seconds) if (MIN_TTL_SECONDS..=MAX_TTL_SECONDS).contains(&seconds) => Ok(seconds),
        Some(_) => Err(format!(
            "must be from {MIN_TTL_SECONDS} seconds to {MAX_TTL_SECONDS} seconds (24 hours)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> SessionClaims {
        SessionClaims {
            workspace_id: WorkspaceId(7),
            session_id: "0123456789abcdef".into(),
            visitor_id: VisitorId::parse("visitor-1").unwrap(),
            expire_time: Micros(1_000),
            issuer_key_id: "fedcba9876543210".into(),
        }
    }

    #[test]
    fn a_signed_token_verifies_to_its_claims_until_it_expires() {
        let token = sign(b"secret", &claims());
        assert!(is_session_token(&token));
        assert_eq!(verify(b"secret", &token, Micros(999)), Ok(claims()));
        assert_eq!(
            verify(b"secret", &token, Micros(1_000)),
            Err(SessionTokenError::Expired)
        );
    }

    #[test]
    fn another_secret_or_any_changed_byte_makes_the_token_invalid() {
        let token = sign(b"secret", &claims());
        assert_eq!(
            verify(b"other", &token, Micros(0)),
            Err(SessionTokenError::Invalid)
        );
        for at in PREFIX.len()..token.len() {
            let mut bytes = token.clone().into_bytes();
            bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
            let altered = String::from_utf8(bytes).unwrap();
            assert_eq!(
                verify(b"secret", &altered, Micros(0)),
                Err(SessionTokenError::Invalid),
                "byte {at} changed"
            );
        }
    }

    #[test]
    fn claims_rewritten_by_the_holder_do_not_verify() {
        let token = sign(b"secret", &claims());
        let (_, tag) = token.rsplit_once('.').unwrap();
        let mut forged = claims();
        forged.visitor_id = VisitorId::parse("someone-else").unwrap();
        forged.expire_time = Micros(i64::MAX);
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        assert_eq!(
            verify(b"secret", &format!("{PREFIX}{body}.{tag}"), Micros(0)),
            Err(SessionTokenError::Invalid)
        );
    }

    #[test]
    fn malformed_tokens_are_invalid() {
        for token in [
            "",
            "cvs_",
            "cvs_.",
            "cvs_abc",
            "cvs_a.b",
            &"cvs_".repeat(600),
        ] {
            assert_eq!(
                verify(b"secret", token, Micros(0)),
                Err(SessionTokenError::Invalid),
                "{token}"
            );
        }
    }

    #[test]
    fn ttl_defaults_to_an_hour_and_stays_within_a_minute_and_a_day() {
        assert_eq!(ttl_seconds(None), Ok(3600));
        assert_eq!(ttl_seconds(Some(60)), Ok(60));
        assert_eq!(ttl_seconds(Some(86_400)), Ok(86_400));
        assert!(ttl_seconds(Some(59)).is_err());
        assert!(ttl_seconds(Some(86_401)).is_err());
    }
}
