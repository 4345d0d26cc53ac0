//! Who is calling: a bearer key resolved to its workspace and role, from
//! memory.
//!
//! The [`KeyCache`] holds every key a caller has presented (found in the
//! store on first use), so authenticating a call reads no SQLite. A key
//! revoked by the command line (another process writing the same file)
//! stops working within [`REVOCATION_POLL`] plus one query: a task polls the
//! store for recent revocations, marks the cached key revoked and rings its
//! open event streams, which end with UNAUTHENTICATED.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use tokio::{sync::watch, task::JoinHandle};

use super::{App, AppError, now};
use crate::{
    domain::{
        Micros, WorkspaceId,
        credentials::{PresentedKey, Role},
    },
    store::{Store, StoreError, StoredKey},
};

/// How often the store is asked for revocations.
pub const REVOCATION_POLL: Duration = Duration::from_millis(250);
/// How far back each poll looks, beyond the previous poll: a revocation is
/// stamped when the revoking process reads its clock, a little before it
/// commits.
const REVOCATION_SLACK_MICROS: i64 = 60 * 1_000_000;

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
    /// Resolves the value of the `authorization` metadata, and counts the
    /// call against its workspace's rate (when one is configured): the door
    /// every call but health and reflection comes through.
    pub async fn admit(&self, authorization: Option<&str>) -> Result<Caller, AppError> {
        let caller = self.authenticate(authorization).await?;
        self.limits.admit(caller.workspace_id)?;
        Ok(caller)
    }

    /// Resolves the value of the `authorization` metadata.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, AppError> {
        let value = authorization.ok_or(AuthError::Missing)?.trim();
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or(AuthError::Invalid)?
            .trim();
        let presented = PresentedKey::parse(token).ok_or(AuthError::Invalid)?;
        let key = match self.keys.get(&presented.key_id) {
            Some(key) => Some(key),
            None => self.keys.load(&presented.key_id).await?,
        };
        match key {
            Some(key) if !key.revoked && presented.matches(&key.secret_hash) => Ok(Caller {
                workspace_id: key.workspace_id,
                role: key.role,
                key_id: presented.key_id,
            }),
            _ => Err(AuthError::Invalid.into()),
        }
    }
}

#[derive(Debug)]
struct CachedKey {
    key: StoredKey,
    /// Turns true when the key is revoked; open streams of the key watch it.
    revoked: watch::Sender<bool>,
}

/// The keys callers presented, in memory. Cheap to clone.
#[derive(Debug, Clone)]
pub struct KeyCache {
    keys: Arc<RwLock<HashMap<String, CachedKey>>>,
    store: Store,
    poll: Arc<JoinHandle<()>>,
}

impl KeyCache {
    /// An empty cache over `store`, with its revocation poll running.
    pub fn start(store: Store) -> Self {
        let keys = Arc::new(RwLock::new(HashMap::new()));
        let poll = tokio::spawn(poll_revocations(store.clone(), Arc::downgrade(&keys)));
        Self {
            keys,
            store,
            poll: Arc::new(poll),
        }
    }

    /// Stops the revocation poll.
    pub fn stop(&self) {
        self.poll.abort();
    }

    fn get(&self, key_id: &str) -> Option<StoredKey> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        keys.get(key_id).map(|cached| cached.key.clone())
    }

    /// Reads a key the cache has not met from the store, and keeps it.
    /// Unknown ids are not kept: guessing cannot fill the memory.
    async fn load(&self, key_id: &str) -> Result<Option<StoredKey>, StoreError> {
        let Some(key) = self.store.find_key(key_id).await? else {
            return Ok(None);
        };
        let mut cached = self.keys.write().unwrap_or_else(|p| p.into_inner());
        let entry = cached
            .entry(key_id.to_owned())
            .or_insert_with(|| CachedKey {
                revoked: watch::channel(key.revoked).0,
                key: key.clone(),
            });
        Ok(Some(entry.key.clone()))
    }

    /// Turns true when `key_id` is revoked.
    pub fn revocation(&self, key_id: &str) -> watch::Receiver<bool> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        match keys.get(key_id) {
            Some(cached) => cached.revoked.subscribe(),
            // Not cached: never authenticated, so nothing is open under it.
            None => watch::channel(true).1,
        }
    }
}

fn mark_revoked(keys: &RwLock<HashMap<String, CachedKey>>, key_ids: &[String]) {
    let mut keys = keys.write().unwrap_or_else(|p| p.into_inner());
    for key_id in key_ids {
        if let Some(cached) = keys.get_mut(key_id)
            && !cached.key.revoked
        {
            tracing::info!(key_id, "key revoked: ending its streams");
            cached.key.revoked = true;
            cached.revoked.send_replace(true);
        }
    }
}

/// Every [`REVOCATION_POLL`], asks the store which keys were revoked since the
/// previous poll (with some slack) and marks them. Ends when the cache is
/// gone.
async fn poll_revocations(store: Store, keys: std::sync::Weak<RwLock<HashMap<String, CachedKey>>>) {
    let mut since = Micros(now().0 - REVOCATION_SLACK_MICROS);
    let mut every = tokio::time::interval(REVOCATION_POLL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(keys) = keys.upgrade() else { return };
        let polled_at = now();
        match store.revoked_since(since).await {
            Ok(revoked) => {
                mark_revoked(&keys, &revoked);
                since = Micros(polled_at.0 - REVOCATION_SLACK_MICROS);
            }
            Err(error) => tracing::warn!(%error, "could not poll for revoked keys"),
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
                "admin keys manage flows and workspace settings; use an agent or visitor key for conversations",
            )),
        }
    }

    /// Refuses keys other than admin ones.
    pub fn require_admin(&self) -> Result<(), AppError> {
        match self.role {
            Role::Admin => Ok(()),
            Role::Agent | Role::Visitor => Err(AppError::PermissionDenied(
                "only admin keys manage flows and workspace settings (conversations key create --role admin)",
            )),
        }
    }
}
