//! Who is calling: a bearer key resolved to its workspace and role.

use super::{App, AppError};
use crate::{
    domain::{
        WorkspaceId,
        credentials::{PresentedKey, Role},
    },
    store::keys,
};

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The key's workspace: the only one the caller can see.
    pub workspace_id: WorkspaceId,
    /// What the key may do.
    pub role: Role,
    /// The key's public id, for logs.
    pub key_id: String,
}

/// Why a caller is not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `authorization` metadata.
    #[error("missing credentials: send the metadata `authorization: Bearer <key>`")]
    Missing,
    /// A key that is malformed, unknown or revoked. One answer for all three,
    /// so probing tells nothing.
    #[error("the API key is not valid (unknown, revoked or malformed)")]
    Invalid,
}

impl App {
    /// Resolves the value of the `authorization` metadata.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, AppError> {
        let value = authorization.ok_or(AuthError::Missing)?.trim();
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or(AuthError::Invalid)?
            .trim();
        let presented = PresentedKey::parse(token).ok_or(AuthError::Invalid)?;
        let stored = keys::find_key(&mut *self.store.read().await?, &presented.key_id).await?;
        match stored {
            Some(key) if !key.revoked && presented.matches(&key.secret_hash) => Ok(Caller {
                workspace_id: key.workspace_id,
                role: key.role,
                key_id: presented.key_id,
            }),
            _ => Err(AuthError::Invalid.into()),
        }
    }
}

impl Caller {
    /// Refuses callers whose role is not `agent`.
    pub fn require_agent(&self, what: &'static str) -> Result<(), AppError> {
        match self.role {
            Role::Agent => Ok(()),
            Role::Visitor | Role::Admin => Err(AppError::PermissionDenied(what)),
        }
    }

    /// Refuses admin keys: they manage flows, not conversations.
    pub fn require_conversation_access(&self) -> Result<(), AppError> {
        match self.role {
            Role::Agent | Role::Visitor => Ok(()),
            Role::Admin => Err(AppError::PermissionDenied(
                "admin keys manage flows; use an agent or visitor key for conversations",
            )),
        }
    }

    /// Refuses keys other than admin ones.
    pub fn require_admin(&self) -> Result<(), AppError> {
        match self.role {
            Role::Admin => Ok(()),
            Role::Agent | Role::Visitor => Err(AppError::PermissionDenied(
                "only admin keys manage flows (conversations key create --role admin)",
            )),
        }
    }
}
