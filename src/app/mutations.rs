//! Mutations: who may ask for which command, and the fingerprint a retried
//! `request_id` is checked against. The writer (`crate::writer`) applies
//! them, batched, each atomically with its messages, events and idempotency
//! record.

use sha2::{Digest, Sha256};

use super::{App, AppError, Caller, now};
use crate::{
    domain::{
        Command, Micros,
        credentials::Role,
        lifecycle::{self, Sender},
        values::RequestId,
    },
    writer::WriteRequest,
};

pub use crate::writer::Outcome;

/// How long a request id is remembered, at least.
pub const REQUEST_ID_RETENTION_MICROS: i64 = 24 * 3600 * 1_000_000;

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
        Command::Assign { .. } => "AssignConversation",
        Command::Fire { .. } => "Timer",
    }
}

/// Whatever the key: only the server's timer task fires timers.
const TIMERS_ARE_THE_SERVERS: AppError =
    AppError::PermissionDenied("timers are the server's own; no key fires them");

/// Refuses what the caller's role may not do.
fn authorize(caller: &Caller, command: &Command) -> Result<(), AppError> {
    caller.require_conversation_access()?;
    if let Command::Fire { .. } = command {
        return Err(TIMERS_ARE_THE_SERVERS);
    }
    if caller.role == Role::Agent {
        return Ok(());
    }
    match command {
        Command::Start { visitor_id, .. } | Command::Restart { visitor_id, .. } => {
            caller.require_own_visitor(Some(visitor_id))?;
        }
        Command::SendMessage {
            sender: Sender::Visitor(visitor_id),
            ..
        } => caller.require_own_visitor(Some(visitor_id))?,
        _ => {}
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
        Command::Assign { .. } => Err(AppError::PermissionDenied(
            "only agent keys can assign a conversation",
        )),
        // Refused above for every role.
        Command::Fire { .. } => Err(TIMERS_ARE_THE_SERVERS),
        Command::Start { agent: None, .. }
        | Command::SendMessage {
            sender: Sender::Visitor(_),
            ..
        }
        | Command::Restart { .. } => Ok(()),
    }
}

impl App {
    /// Runs `command` for `caller`, atomically. A retry with the same
    /// `request_id` and the same command returns the first outcome. Answers
    /// once the command is durable (or refused).
    #[tracing::instrument(skip_all, fields(method = method(&command), workspace = caller.workspace_id.0))]
    pub async fn execute(
        &self,
        caller: &Caller,
        request_id: Option<RequestId>,
        command: Command,
    ) -> Result<Outcome, AppError> {
        authorize(caller, &command)?;
        let method = method(&command);
        // Only a request that can be retried needs its fingerprint.
        let fingerprint = match request_id {
            Some(_) => Sha256::new()
                .chain_update(method.as_bytes())
                .chain_update(serde_json::to_vec(&command).map_err(crate::store::StoreError::from)?)
                .finalize()
                .to_vec(),
            None => Vec::new(),
        };
        let request = WriteRequest {
            workspace_id: caller.workspace_id,
            sees_every_conversation: caller.role == Role::Agent,
            request_id,
            method,
            fingerprint,
            command,
        };
        Ok(self.writer.submit(request).await?)
    }

    /// Forgets request ids older than the retention; returns how many.
    pub async fn purge_request_ids(&self) -> Result<u64, AppError> {
        let cutoff = Micros(now().0 - REQUEST_ID_RETENTION_MICROS);
        Ok(self.store.purge_request_ids(cutoff).await?)
    }
}
