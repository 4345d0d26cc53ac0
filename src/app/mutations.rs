//! Mutations: each is one write transaction holding the idempotency check,
//! the domain decision, the conversation, its messages, its events and the
//! idempotency record.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{App, AppError, Caller, UlidIds, now};
use crate::{
    domain::{
        Command, Conversation, Message, Micros, WorkspaceId,
        credentials::Role,
        flow::ValidFlow,
        lifecycle::{self, FlowRef, Sender},
        values::RequestId,
    },
    store::{
        StoreError, changes, conversations,
        flows::{self, StoredFlow},
        idempotency,
    },
};

/// How long a request id is remembered, at least.
pub const REQUEST_ID_RETENTION_MICROS: i64 = 24 * 3600 * 1_000_000;

/// What a mutation answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The conversation after the mutation.
    pub conversation: Conversation,
    /// The message written, for SendMessage.
    pub message: Option<Message>,
    /// The sequence of the mutation's last event.
    pub event_sequence: i64,
}

fn method(command: &Command) -> &'static str {
    match command {
        Command::Start { .. } => "StartConversation",
        Command::SendMessage { .. } => "SendMessage",
        Command::ChangeStatus { action, .. } => match action {
            lifecycle::AgentAction::Close => "CloseConversation",
            lifecycle::AgentAction::MarkPending => "MarkConversationPending",
            lifecycle::AgentAction::Reopen => "ReopenConversation",
        },
        Command::Restart { .. } => "RestartConversation",
    }
}

/// Refuses what the caller's role may not do.
fn authorize(caller: &Caller, command: &Command) -> Result<(), AppError> {
    caller.require_conversation_access()?;
    if caller.role == Role::Agent {
        return Ok(());
    }
    match command {
        Command::Start { agent: Some(_), .. } => Err(AppError::PermissionDenied(
            "visitor keys cannot start a conversation as an agent; leave `agent` unset or use an agent key",
        )),
        Command::SendMessage {
            sender: Sender::Agent(_),
            ..
        } => Err(AppError::PermissionDenied(
            "visitor keys can only send messages as the visitor; use an agent key to write as an agent",
        )),
        Command::ChangeStatus { .. } => Err(AppError::PermissionDenied(
            "only agent keys can close, mark pending or reopen a conversation",
        )),
        Command::Start { agent: None, .. }
        | Command::SendMessage {
            sender: Sender::Visitor(_),
            ..
        }
        | Command::Restart { .. } => Ok(()),
    }
}

impl App {
    /// Runs `command` for `caller` in one transaction. A retry with the same
    /// `request_id` and the same command returns the first outcome.
    #[tracing::instrument(skip_all, fields(method = method(&command), workspace = caller.workspace_id.0))]
    pub async fn execute(
        &self,
        caller: &Caller,
        request_id: Option<RequestId>,
        command: Command,
    ) -> Result<Outcome, AppError> {
        authorize(caller, &command)?;
        let method = method(&command);
        let fingerprint = Sha256::new()
            .chain_update(method.as_bytes())
            .chain_update(serde_json::to_vec(&command).map_err(crate::store::StoreError::from)?)
            .finalize()
            .to_vec();
        let workspace_id = caller.workspace_id;

        let mut tx = self.store.begin_write().await?;
        if let Some(request_id) = &request_id {
            if let Some(record) = idempotency::find(&mut tx, workspace_id, request_id).await? {
                if record.method == method && record.fingerprint == fingerprint {
                    tracing::debug!("replaying the first response of a retried request");
                    let outcome = serde_json::from_str(&record.response)
                        .map_err(crate::store::StoreError::from)?;
                    return Ok(outcome);
                }
                return Err(AppError::RequestIdReused(request_id.as_str().to_owned()));
            }
        }
        let current = match command.conversation_id() {
            Some(id) => {
                let found = conversations::get(&mut tx, workspace_id, id).await?;
                let visible = found.filter(|c| {
                    // A visitor key sees only the conversations of the visitor
                    // it names: another's answers as if it did not exist.
                    caller.role == Role::Agent || command.acting_visitor() == Some(&c.visitor_id)
                });
                Some(visible.ok_or_else(|| AppError::NotFound(id.as_str().to_owned()))?)
            }
            None => None,
        };
        let flow = self
            .flow_for(&mut tx, workspace_id, &command, current.as_ref())
            .await?;
        let flow_ref = flow.as_ref().map(|(stored, valid)| FlowRef {
            flow_id: &stored.flow_id,
            version: stored.version,
            flow: valid,
        });
        let now = now();
        let change = lifecycle::decide(
            &command,
            workspace_id,
            current.as_ref(),
            flow_ref,
            now,
            &mut UlidIds,
        )?;
        let event_sequence = changes::apply(&mut tx, &change).await?;
        let outcome = Outcome {
            conversation: change.conversation,
            message: change.sent_message,
            event_sequence,
        };
        if let Some(request_id) = &request_id {
            let record = idempotency::Record {
                method: method.to_owned(),
                fingerprint,
                response: serde_json::to_string(&outcome)
                    .map_err(crate::store::StoreError::from)?,
            };
            idempotency::insert(&mut tx, workspace_id, request_id, &record, now).await?;
        }
        self.store.commit(tx, Some(event_sequence)).await?;
        Ok(outcome)
    }

    /// The flow `command` runs, if any: for a start, the named flow or the
    /// workspace default (newest version); for a visitor's message or a
    /// restart, the flow and version the conversation's run started with.
    async fn flow_for(
        &self,
        tx: &mut sqlx::SqliteConnection,
        workspace_id: WorkspaceId,
        command: &Command,
        current: Option<&Conversation>,
    ) -> Result<Option<(StoredFlow, ValidFlow)>, AppError> {
        let wanted = match (command, current) {
            (Command::Start { flow_id, .. }, _) => match flow_id {
                Some(flow_id) => Some((flow_id.clone(), None, true)),
                None => flows::default_flow_id(tx, workspace_id)
                    .await?
                    .map(|id| (id, None, false)),
            },
            // A visitor's message only matters to a run that still waits for
            // an answer; a restart replays whatever the run reached.
            (
                Command::SendMessage {
                    sender: Sender::Visitor(_),
                    ..
                },
                Some(Conversation {
                    flow: Some(run), ..
                }),
            ) if run.status.is_active() => Some((run.flow_id.clone(), Some(run.version), false)),
            (
                Command::Restart { .. },
                Some(Conversation {
                    flow: Some(run), ..
                }),
            ) => Some((run.flow_id.clone(), Some(run.version), false)),
            _ => None,
        };
        let Some((flow_id, version, named)) = wanted else {
            return Ok(None);
        };
        let Some(stored) = flows::get(tx, workspace_id, &flow_id, version).await? else {
            // A flow the caller named must exist; a default or a running
            // version that vanished is a fault of ours.
            return Err(if named {
                AppError::FlowNotFound(flow_id)
            } else {
                AppError::Store(StoreError::Corrupt(format!("flow {flow_id} is missing")))
            });
        };
        let valid = stored.definition.validate().map_err(|violations| {
            AppError::Store(StoreError::Corrupt(format!(
                "stored flow {flow_id} no longer validates: {violations:?}"
            )))
        })?;
        Ok(Some((stored, valid)))
    }

    /// Forgets request ids older than the retention; returns how many.
    pub async fn purge_request_ids(&self) -> Result<u64, AppError> {
        let cutoff = Micros(now().0 - REQUEST_ID_RETENTION_MICROS);
        let mut tx = self.store.begin_write().await?;
        let purged = idempotency::purge_before(&mut tx, cutoff).await?;
        self.store.commit(tx, None).await?;
        Ok(purged)
    }
}
