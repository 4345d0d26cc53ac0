//! Administration for the command line: workspaces and keys.

use super::now;
use crate::{
    domain::{
        WorkspaceId,
        credentials::{IssuedKey, Role, check_workspace_name},
    },
    store::{Store, StoreError, keys},
};

/// The workspace an empty database gets.
pub const DEFAULT_WORKSPACE: &str = "default";

/// Why an administrative command failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// A name that is not acceptable.
    #[error("{0}")]
    InvalidName(String),
    /// The workspace exists already.
    #[error("workspace {0:?} already exists")]
    WorkspaceExists(String),
    /// No such workspace.
    #[error("no workspace named {0:?}; create it with `conversations workspace create {0}`")]
    NoSuchWorkspace(String),
    /// No such key, or it was revoked already.
    #[error("no active key with id {0:?}")]
    NoSuchKey(String),
    /// The operating system gave no randomness.
    #[error("could not read random bytes: {0}")]
    Random(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for AdminError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

/// The keys made for a new database.
#[derive(Debug, Clone)]
pub struct BootstrapKeys {
    /// An agent key of the default workspace.
    pub agent: IssuedKey,
    /// A visitor key of the default workspace.
    pub visitor: IssuedKey,
}

fn random_key() -> Result<IssuedKey, AdminError> {
    let mut random = [0u8; 40];
    getrandom::fill(&mut random).map_err(|e| AdminError::Random(e.to_string()))?;
    Ok(IssuedKey::from_random(random))
}

/// Creates a workspace.
pub async fn create_workspace(store: &Store, name: &str) -> Result<WorkspaceId, AdminError> {
    check_workspace_name(name).map_err(AdminError::InvalidName)?;
    let mut tx = store.begin_write().await?;
    let id = keys::create_workspace(&mut tx, name, now())
        .await?
        .ok_or_else(|| AdminError::WorkspaceExists(name.to_owned()))?;
    store.commit(tx, None).await?;
    Ok(id)
}

/// Makes a key for a workspace; the returned token is the only copy.
pub async fn create_key(
    store: &Store,
    workspace: &str,
    role: Role,
) -> Result<IssuedKey, AdminError> {
    let mut tx = store.begin_write().await?;
    let workspace_id = keys::find_workspace(&mut tx, workspace)
        .await?
        .ok_or_else(|| AdminError::NoSuchWorkspace(workspace.to_owned()))?;
    let key = random_key()?;
    keys::insert_key(
        &mut tx,
        &key.key_id,
        workspace_id,
        role,
        &key.secret_hash,
        now(),
    )
    .await?;
    store.commit(tx, None).await?;
    Ok(key)
}

/// Revokes a key, named by its id or by the whole key.
pub async fn revoke_key(store: &Store, key: &str) -> Result<(), AdminError> {
    let key_id = crate::domain::credentials::PresentedKey::parse(key)
        .map_or_else(|| key.to_owned(), |k| k.key_id);
    let mut tx = store.begin_write().await?;
    if !keys::revoke_key(&mut tx, &key_id, now()).await? {
        return Err(AdminError::NoSuchKey(key_id));
    }
    store.commit(tx, None).await?;
    Ok(())
}

/// On a database with no workspace, creates `default` with one agent and one
/// visitor key and returns them; otherwise does nothing.
pub async fn bootstrap(store: &Store) -> Result<Option<BootstrapKeys>, AdminError> {
    let mut tx = store.begin_write().await?;
    if keys::count_workspaces(&mut tx).await? > 0 {
        return Ok(None);
    }
    let now = now();
    let workspace_id = keys::create_workspace(&mut tx, DEFAULT_WORKSPACE, now)
        .await?
        .ok_or_else(|| AdminError::WorkspaceExists(DEFAULT_WORKSPACE.to_owned()))?;
    let agent = random_key()?;
    let visitor = random_key()?;
    for (key, role) in [(&agent, Role::Agent), (&visitor, Role::Visitor)] {
        keys::insert_key(
            &mut tx,
            &key.key_id,
            workspace_id,
            role,
            &key.secret_hash,
            now,
        )
        .await?;
    }
    store.commit(tx, None).await?;
    Ok(Some(BootstrapKeys { agent, visitor }))
}
