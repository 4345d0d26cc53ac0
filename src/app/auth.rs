//! Who is calling: a bearer key, or a visitor session token, resolved to
//! its workspace and role, from memory.
//!
//! The [`KeyCache`] holds every key a caller has presented (found in the
//! store on first use), so authenticating a call reads no SQLite. A key
//! revoked by the command line (another process writing the same file)
//! stops working within [`REVOCATION_POLL`] plus one query: a task polls the
//! store for recent revocations, marks the cached key revoked and rings its
//! open event streams, which end with UNAUTHENTICATED.
//!
//! A visitor session token (`crate::domain::session`) is checked against the
//! server's signing secret, held here, and against the sessions revoked
//! before they expire, also polled. It stops working when it expires, when
//! it is revoked, and when the key that asked for it is revoked; its open
//! streams end then too.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use tokio::{sync::watch, task::JoinHandle};

use super::{App, AppError, FieldViolation, now};
use crate::{
    domain::{
        Micros, WorkspaceId,
        credentials::{PresentedKey, Role},
        session::{self, SessionClaims, SessionTokenError},
        values::VisitorId,
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
    /// The key's public id, for logs (for a session: the key that asked
    /// for it).
    pub key_id: String,
    /// Set when the caller is a browser holding a visitor session: it acts
    /// as this one visitor, and nothing else.
    pub session: Option<VisitorSession>,
}

/// What a visitor session token grants, once checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VisitorSession {
    /// Names the session for revocation and logs.
    pub session_id: String,
    /// The one visitor the session acts as.
    pub visitor_id: VisitorId,
    /// When the token stops working.
    pub expire_time: Micros,
}

/// A newly made visitor session.
#[derive(Debug, Clone)]
pub struct IssuedSession {
    /// What the browser sends as `authorization: Bearer <token>`.
    pub token: String,
    /// Names the session, e.g. to revoke it.
    pub session_id: String,
    /// When the token stops working.
    pub expire_time: Micros,
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
    /// A visitor session token that is malformed or altered.
    #[error("the visitor session token is not valid (malformed or altered)")]
    SessionInvalid,
    /// A visitor session token past its expiry.
    #[error("the visitor session token has expired; ask the site's backend for a new one")]
    SessionExpired,
    /// A visitor session revoked, or whose key was revoked.
    #[error("the visitor session was revoked (or the key that made it was)")]
    SessionRevoked,
}

impl From<SessionTokenError> for AuthError {
    fn from(e: SessionTokenError) -> Self {
        match e {
            SessionTokenError::Invalid => Self::SessionInvalid,
            SessionTokenError::Expired => Self::SessionExpired,
        }
    }
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
        if session::is_session_token(token) {
            return self.authenticate_session(token).await;
        }
        let presented = PresentedKey::parse(token).ok_or(AuthError::Invalid)?;
        match self.keys.key(&presented.key_id).await? {
            Some(key) if !key.revoked && presented.matches(&key.secret_hash) => Ok(Caller {
                workspace_id: key.workspace_id,
                role: key.role,
                key_id: presented.key_id,
                session: None,
            }),
            _ => Err(AuthError::Invalid.into()),
        }
    }

    /// Checks a visitor session token: its signature and expiry, then that
    /// neither it nor the key that asked for it was revoked.
    async fn authenticate_session(&self, token: &str) -> Result<Caller, AppError> {
        let claims = session::verify(&self.keys.secret, token, now()).map_err(AuthError::from)?;
        let issuer_valid = self
            .keys
            .key(&claims.issuer_key_id)
            .await?
            .is_some_and(|key| !key.revoked && key.workspace_id == claims.workspace_id);
        if !issuer_valid
            || self
                .keys
                .session_revoked(claims.workspace_id, &claims.session_id)
        {
            return Err(AuthError::SessionRevoked.into());
        }
        Ok(Caller {
            workspace_id: claims.workspace_id,
            role: Role::Visitor,
            key_id: claims.issuer_key_id,
            session: Some(VisitorSession {
                session_id: claims.session_id,
                visitor_id: claims.visitor_id,
                expire_time: claims.expire_time,
            }),
        })
    }

    /// Makes a visitor session for `visitor_id` lasting `ttl_seconds` (None:
    /// the default): for a site's backend, with its agent or visitor key, to
    /// hand to that visitor's browser.
    pub fn create_visitor_session(
        &self,
        caller: &Caller,
        visitor_id: VisitorId,
        ttl_seconds: Option<i64>,
    ) -> Result<IssuedSession, AppError> {
        caller.require_key(
            "a visitor session cannot make sessions; the site's backend makes them with its key",
        )?;
        let ttl = session::ttl_seconds(ttl_seconds).map_err(|description| {
            AppError::InvalidArgument(vec![FieldViolation {
                field: "ttl".into(),
                description,
            }])
        })?;
        let mut random = [0u8; 8];
        getrandom::fill(&mut random)
            .map_err(|e| StoreError::Corrupt(format!("no randomness for a session id: {e}")))?;
        let claims = SessionClaims {
            workspace_id: caller.workspace_id,
            session_id: hex::encode(random),
            visitor_id,
            expire_time: Micros(now().0 + ttl * 1_000_000),
            issuer_key_id: caller.key_id.clone(),
        };
        Ok(IssuedSession {
            token: session::sign(&self.keys.secret, &claims),
            session_id: claims.session_id,
            expire_time: claims.expire_time,
        })
    }

    /// Revokes a visitor session of the caller's workspace: its token stops
    /// working on this server at once, on others within a poll. An id that
    /// names no session changes nothing that matters (sessions are not
    /// stored, so it cannot tell).
    pub async fn revoke_visitor_session(
        &self,
        caller: &Caller,
        session_id: &str,
    ) -> Result<(), AppError> {
        caller.require_key(
            "a visitor session cannot revoke sessions; the site's backend does, with its key",
        )?;
        let now = now();
        // No session outlives this, whenever it was made.
        let expire_time = Micros(now.0 + session::MAX_TTL_SECONDS * 1_000_000);
        self.store
            .revoke_session(caller.workspace_id, session_id, expire_time, now)
            .await?;
        self.keys
            .mark_sessions_revoked(&[(caller.workspace_id, session_id.to_owned())]);
        Ok(())
    }

    /// Forgets revocations of sessions that have expired anyway (their
    /// tokens no longer work); returns how many.
    pub async fn purge_revoked_sessions(&self) -> Result<u64, AppError> {
        Ok(self.store.purge_revoked_sessions(now()).await?)
    }

    /// Turns true when the caller's credentials stop working: its key is
    /// revoked, or (for a visitor session) the session is revoked or
    /// expires.
    pub(super) fn credentials_end(&self, caller: &Caller) -> watch::Receiver<bool> {
        let key = self.keys.revocation(&caller.key_id);
        let Some(grant) = &caller.session else {
            return key;
        };
        let session = self
            .keys
            .session_revocation(caller.workspace_id, &grant.session_id);
        let left = Duration::from_micros(grant.expire_time.0.saturating_sub(now().0).max(0) as u64);
        let (ended, watched) = watch::channel(false);
        tokio::spawn(async move {
            let (mut key, mut session) = (key, session);
            tokio::select! {
                _ = key.wait_for(|revoked| *revoked) => {}
                _ = session.wait_for(|revoked| *revoked) => {}
                () = tokio::time::sleep(left) => {}
                () = ended.closed() => return,
            }
            ended.send_replace(true);
        });
        watched
    }
}

#[derive(Debug)]
struct CachedKey {
    key: StoredKey,
    /// Turns true when the key is revoked; open streams of the key watch it.
    revoked: watch::Sender<bool>,
}

/// A visitor session revoked before its expiry, or with a stream open.
#[derive(Debug)]
struct SessionState {
    /// Turns true when the session is revoked; its open streams watch it.
    revoked: watch::Sender<bool>,
    /// After this the entry may go: the token no longer works anyway.
    forget_after: Micros,
}

type Sessions = HashMap<(WorkspaceId, String), SessionState>;

/// The keys callers presented, the sessions revoked, and the secret that
/// signs session tokens, in memory. Cheap to clone.
#[derive(Debug, Clone)]
pub struct KeyCache {
    keys: Arc<RwLock<HashMap<String, CachedKey>>>,
    sessions: Arc<RwLock<Sessions>>,
    secret: Arc<[u8]>,
    store: Store,
    poll: Arc<JoinHandle<()>>,
}

impl KeyCache {
    /// A cache over `store` holding its session secret (made now if the
    /// database has none) and the sessions revoked and not yet expired,
    /// with its revocation poll running.
    pub async fn start(store: Store) -> Result<Self, StoreError> {
        let mut candidate = [0u8; 32];
        getrandom::fill(&mut candidate).map_err(|e| {
            StoreError::Corrupt(format!("no randomness for the session secret: {e}"))
        })?;
        let secret: Arc<[u8]> = store.session_secret(&candidate, now()).await?.into();
        let started = now();
        let sessions = Arc::new(RwLock::new(HashMap::new()));
        mark_sessions_revoked(
            &sessions,
            &store.revoked_sessions_since(Micros(0), started).await?,
        );
        let keys = Arc::new(RwLock::new(HashMap::new()));
        let poll = tokio::spawn(poll_revocations(
            store.clone(),
            Arc::downgrade(&keys),
            Arc::downgrade(&sessions),
            started,
        ));
        Ok(Self {
            keys,
            sessions,
            secret,
            store,
            poll: Arc::new(poll),
        })
    }

    /// Stops the revocation poll.
    pub fn stop(&self) {
        self.poll.abort();
    }

    /// The key with this id, from memory, or from the store the first time.
    async fn key(&self, key_id: &str) -> Result<Option<StoredKey>, StoreError> {
        match self.get(key_id) {
            Some(key) => Ok(Some(key)),
            None => self.load(key_id).await,
        }
    }

    fn get(&self, key_id: &str) -> Option<StoredKey> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        keys.get(key_id).map(|cached| cached.key.clone())
    }

    fn session_revoked(&self, workspace_id: WorkspaceId, session_id: &str) -> bool {
        let sessions = self.sessions.read().unwrap_or_else(|p| p.into_inner());
        sessions
            .get(&(workspace_id, session_id.to_owned()))
            .is_some_and(|state| *state.revoked.borrow())
    }

    fn mark_sessions_revoked(&self, revoked: &[(WorkspaceId, String)]) {
        mark_sessions_revoked(&self.sessions, revoked);
    }

    /// Turns true when the session is revoked.
    fn session_revocation(
        &self,
        workspace_id: WorkspaceId,
        session_id: &str,
    ) -> watch::Receiver<bool> {
        let mut sessions = self.sessions.write().unwrap_or_else(|p| p.into_inner());
        sessions
            .entry((workspace_id, session_id.to_owned()))
            .or_insert_with(|| SessionState {
                revoked: watch::channel(false).0,
                forget_after: Micros(now().0 + session::MAX_TTL_SECONDS * 1_000_000),
            })
            .revoked
            .subscribe()
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

fn mark_sessions_revoked(sessions: &RwLock<Sessions>, revoked: &[(WorkspaceId, String)]) {
    let mut sessions = sessions.write().unwrap_or_else(|p| p.into_inner());
    let forget_after = Micros(now().0 + session::MAX_TTL_SECONDS * 1_000_000);
    for id in revoked {
        let state = sessions.entry(id.clone()).or_insert_with(|| SessionState {
            revoked: watch::channel(false).0,
            forget_after,
        });
        if !*state.revoked.borrow() {
            tracing::info!(
                session_id = id.1,
                "visitor session revoked: ending its streams"
            );
            state.revoked.send_replace(true);
        }
    }
}

/// Drops the sessions whose tokens have expired by `now` and that no
/// stream watches: what is left is bounded by the sessions revoked or
/// watched within a day.
fn forget_expired_sessions(sessions: &RwLock<Sessions>, now: Micros) {
    let mut sessions = sessions.write().unwrap_or_else(|p| p.into_inner());
    sessions.retain(|_, state| state.forget_after > now || state.revoked.receiver_count() > 0);
}

/// Every [`REVOCATION_POLL`], asks the store which keys and visitor sessions
/// were revoked since the previous poll (with some slack) and marks them.
/// Ends when the cache is gone.
async fn poll_revocations(
    store: Store,
    keys: std::sync::Weak<RwLock<HashMap<String, CachedKey>>>,
    sessions: std::sync::Weak<RwLock<Sessions>>,
    started: Micros,
) {
    let mut since = Micros(started.0 - REVOCATION_SLACK_MICROS);
    let mut every = tokio::time::interval(REVOCATION_POLL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let (Some(keys), Some(sessions)) = (keys.upgrade(), sessions.upgrade()) else {
            return;
        };
        let polled_at = now();
        let revoked = async {
            let keys = store.revoked_since(since).await?;
            let sessions = store.revoked_sessions_since(since, polled_at).await?;
            Ok::<_, StoreError>((keys, sessions))
        };
        match revoked.await {
            Ok((revoked_keys, revoked_sessions)) => {
                mark_revoked(&keys, &revoked_keys);
                mark_sessions_revoked(&sessions, &revoked_sessions);
                forget_expired_sessions(&sessions, polled_at);
                since = Micros(polled_at.0 - REVOCATION_SLACK_MICROS);
            }
            Err(error) => tracing::warn!(%error, "could not poll for revoked keys and sessions"),
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

    /// Refuses visitor sessions (and admin keys): what only a site's
    /// backend, holding its key, may do.
    pub fn require_key(&self, what: &'static str) -> Result<(), AppError> {
        self.require_conversation_access()?;
        match self.session {
            Some(_) => Err(AppError::PermissionDenied(what)),
            None => Ok(()),
        }
    }

    /// Refuses a visitor session naming a visitor other than its own: a
    /// session acts as its one visitor.
    pub fn require_own_visitor(&self, visitor_id: Option<&VisitorId>) -> Result<(), AppError> {
        match &self.session {
            Some(grant) if visitor_id != Some(&grant.visitor_id) => {
                Err(AppError::PermissionDenied(
                    "a visitor session acts only as its own visitor; leave visitor_id empty or name that visitor",
                ))
            }
            _ => Ok(()),
        }
    }

    /// What stream limits count this caller as: its session, or its key.
    pub fn stream_owner(&self) -> String {
        match &self.session {
            Some(grant) => format!("session:{}", grant.session_id),
            None => self.key_id.clone(),
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
