//! API keys: their format, their hashes and their roles. Randomness comes in
//! from the caller, so this stays free of I/O.
//!
//! A key reads `cvk_<key id>_<secret>`: the key id (16 hex digits) is public
//! and names the key in storage and on the command line; the secret (64 hex
//! digits, 256 bits) is stored only as its SHA-256 hash and compared in
//! constant time.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const PREFIX: &str = "cvk_";

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Inbox, Slack and Teams backends: everything, every message.
    Agent,
    /// The widget's backend: acts as visitors, sees what visitors see.
    Visitor,
    /// Workspace administration: manages flows; no conversation access.
    Admin,
}

impl Role {
    /// The name used in storage and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Visitor => "visitor",
            Self::Admin => "admin",
        }
    }

    /// Whether the role may see what only agents see: agents-only messages
    /// and their events and counts, which channel an agent acted from, and
    /// the answers a flow collected. Visitors see none of it, anywhere.
    pub fn sees_agents_only(self) -> bool {
        match self {
            Self::Agent | Self::Admin => true,
            Self::Visitor => false,
        }
    }

    /// Reads the storage name back.
    pub fn from_stored(value: &str) -> Option<Self> {
        match value {
            "agent" => Some(Self::Agent),
            "visitor" => Some(Self::Visitor),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// A key as presented by a caller, split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentedKey {
    /// The public part.
    pub key_id: String,
    secret: String,
}

impl PresentedKey {
    /// Splits `cvk_<id>_<secret>`; `None` when it is not of that form.
    pub fn parse(token: &str) -> Option<Self> {
        let rest = token.strip_prefix(PREFIX)?;
        let (key_id, secret) = rest.split_once('_')?;
        let is_hex =
            |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
        (is_hex(key_id, 16) && is_hex(secret, 64)).then(|| Self {
            key_id: key_id.to_owned(),
            secret: secret.to_owned(),
        })
    }

    /// True when this key's secret hashes to `stored_hash`, compared in
    /// constant time.
    pub fn matches(&self, stored_hash: &[u8]) -> bool {
        hash_secret(&self.secret)
            .as_slice()
            .ct_eq(stored_hash)
            .into()
    }
}

/// A newly made key: the full text is shown once and never stored.
#[derive(Debug, Clone)]
pub struct IssuedKey {
    /// The public part.
    pub key_id: String,
    /// The whole key, to hand to the caller once.
    pub token: String,
    /// What is stored.
    pub secret_hash: Vec<u8>,
}

impl IssuedKey {
    /// Makes a key from 40 random bytes (8 for the id, 32 for the secret).
    pub fn from_random(random: [u8; 40]) -> Self {
        let key_id = hex::encode(&random[..8]);
        let secret = hex::encode(&random[8..]);
        Self {
            token: format!("{PREFIX}{key_id}_{secret}"),
            secret_hash: hash_secret(&secret).to_vec(),
            key_id,
        }
    }
}

fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Workspace names: 1 to 64 of `a-z 0-9 - _`, so they are safe in scripts.
pub fn check_workspace_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "workspace name {name:?} must be 1 to 64 characters of a-z, 0-9, '-' and '_'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issued_key_parses_back_and_matches_only_its_hash() {
        let issued = IssuedKey::from_random([7; 40]);
        let presented = PresentedKey::parse(&issued.token).unwrap();
        assert_eq!(presented.key_id, issued.key_id);
        assert!(presented.matches(&issued.secret_hash));
        let other = IssuedKey::from_random([8; 40]);
        assert!(!presented.matches(&other.secret_hash));
    }

    #[test]
    fn malformed_keys_do_not_parse() {
        for token in ["", "cvk_", "cvk_abc_def", "Bearer x", &"cvk_".repeat(30)] {
            assert!(PresentedKey::parse(token).is_none(), "{token}");
        }
    }
}
