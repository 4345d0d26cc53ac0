//! The ConversationService handlers: authenticate, parse and validate the
//! request into a domain command or query, delegate to the application, and
//! convert the answer for the caller's role.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status};

use super::convert::{self, Fields, page_size, page_token, to_conversation, to_event, to_message};
use crate::{
    app::{App, Caller, StreamPermit, feed::EventQuery, mutations::Outcome, queries::count_of},
    domain::{
        Command, Micros, Status as ConversationStatus,
        credentials::Role,
        lifecycle::{AgentAction, Sender},
        values::{AgentId, ConversationId, FlowId, RequestId, VisitorId},
    },
    feed::{FeedEnd, FeedItem},
    ids::now,
    pb::{self, conversation_service_server::ConversationService},
    store::{AssigneeFilter, ListFilter},
};

fn status_counts(counts: &[i64; 3]) -> pb::StatusCounts {
    pb::StatusCounts {
        open: count_of(counts, ConversationStatus::Open),
        pending: count_of(counts, ConversationStatus::Pending),
        closed: count_of(counts, ConversationStatus::Closed),
    }
}

/// Serves `conversations.v1.ConversationService`.
#[derive(Debug, Clone)]
pub struct ConversationsApi {
    app: App,
}

impl ConversationsApi {
    /// Serves the application's use cases over gRPC.
    pub fn new(app: App) -> Self {
        Self { app }
    }

    /// A request's `visitor_id`: as given, or, when empty and the caller is
    /// a visitor session, the session's own.
    fn visitor<'a>(caller: &'a Caller, given: &'a str) -> &'a str {
        match &caller.session {
            Some(grant) if given.is_empty() => grant.visitor_id.as_str(),
            _ => given,
        }
    }

    async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let caller = self.app.admit(super::authorization(request)).await?;
        super::rpc_log::note_caller(&caller);
        Ok(caller)
    }

    async fn run(
        &self,
        caller: &Caller,
        request_id: Option<RequestId>,
        command: Command,
    ) -> Result<Outcome, Status> {
        super::rpc_log::note_request_id(request_id.as_ref().map(RequestId::as_str));
        Ok(self.app.execute(caller, request_id, command).await?)
    }

    /// Parses the shared part of WatchEvents and ListEvents.
    fn event_query(
        f: &mut Fields,
        caller: &Caller,
        after_sequence: i64,
        conversation_id: &str,
        visitor_id: &str,
        event_types: &[i32],
    ) -> EventQuery {
        EventQuery {
            after_sequence,
            conversation_id: f.optional("conversation_id", conversation_id, ConversationId::parse),
            visitor_id: f.optional(
                "visitor_id",
                Self::visitor(caller, visitor_id),
                VisitorId::parse,
            ),
            kinds: convert::event_kinds(f, event_types),
        }
    }

    /// Close, mark pending and reopen share their request shape (mark
    /// pending adds the snooze).
    #[allow(clippy::too_many_arguments)]
    async fn change_status(
        &self,
        caller: &Caller,
        action: AgentAction,
        conversation_id: &str,
        agent: Option<&pb::AgentRef>,
        etag: &str,
        request_id: &str,
        snooze_end_time: Option<&prost_types::Timestamp>,
    ) -> Result<(pb::Conversation, i64), Status> {
        let mut f = Fields::default();
        let conversation_id = f.check("conversation_id", ConversationId::parse(conversation_id));
        let agent = convert::agent(&mut f, "agent", agent);
        let request_id = f.optional("request_id", request_id, RequestId::parse);
        let etag = (!etag.is_empty()).then(|| etag.to_owned());
        let snooze_end_time = snooze_end_time.and_then(|t| convert::snooze_end(&mut f, t));
        let command = f.done((|| {
            Some(Command::ChangeStatus {
                conversation_id: conversation_id?,
                action,
                agent: agent?,
                etag,
                snooze_end_time,
            })
        })())?;
        let outcome = self.run(caller, request_id, command).await?;
        Ok((
            to_conversation(&outcome.conversation, caller.role),
            outcome.event_sequence,
        ))
    }
}

/// The WatchEvents response stream: the subscription's items, until the
/// producer ends it for a reason; then that reason is the final status at
/// once. Items still buffered are dropped rather than delivered first (a
/// client too slow to read them would otherwise hold the stream open), and
/// the status names the last sequence this stream actually yielded, so
/// resuming from it loses nothing.
pub struct WatchEventsStream {
    /// Counts the stream against the limits while it is open.
    _permit: StreamPermit,
    items: mpsc::Receiver<FeedItem>,
    end: Option<oneshot::Receiver<FeedEnd>>,
    role: Role,
    /// The sequence of the last event or checkpoint yielded (at first the
    /// request's cursor).
    yielded: i64,
    /// Counts the stream among the open ones of its kind while it is open.
    _open: OpenStream,
    /// For a visitor session's stream: when the session expires, to tell an
    /// expiry from a revocation when its credentials end.
    session_expire: Option<Micros>,
    /// The delivery metrics, looked up once per stream rather than once per
    /// event (a registry lookup each).
    delivery_lag: ::metrics::Histogram,
    delivered: ::metrics::Counter,
}

/// One open event stream in the `conversations_streams_open` gauge of its
/// kind, until dropped.
struct OpenStream(&'static str);

impl OpenStream {
    fn new(kind: &'static str) -> Self {
        ::metrics::gauge!(crate::metrics::STREAMS_OPEN, "kind" => kind).increment(1.0);
        Self(kind)
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        ::metrics::gauge!(crate::metrics::STREAMS_OPEN, "kind" => self.0).decrement(1.0);
    }
}

impl tokio_stream::Stream for WatchEventsStream {
    type Item = Result<pb::WatchEventsResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        use pb::watch_events_response::Item;
        // The producer's reason to end comes first, ahead of buffered items.
        if let Some(end) = self.end.as_mut()
            && let Poll::Ready(reason) = Pin::new(end).poll(cx)
        {
            self.end = None;
            if let Ok(reason) = reason {
                self.items.close();
                let status = match (reason.resume_from(self.yielded), self.session_expire) {
                    (FeedEnd::Revoked { last_sequence }, Some(expire)) => {
                        super::error::session_stream_ended(last_sequence, now() >= expire)
                    }
                    (reason, _) => reason.into(),
                };
                return Poll::Ready(Some(Err(status)));
            }
        }
        match self.items.poll_recv(cx) {
            Poll::Ready(Some(item)) => {
                let item = match item {
                    FeedItem::Event(event) => {
                        self.yielded = event.sequence;
                        let lag = (now().0 - event.create_time.0).max(0) as f64 / 1e6;
                        self.delivery_lag.record(lag);
                        self.delivered.increment(1);
                        Item::Event(to_event(&event, self.role))
                    }
                    FeedItem::Checkpoint(sequence) => {
                        self.yielded = sequence;
                        Item::Checkpoint(pb::Checkpoint { sequence })
                    }
                };
                Poll::Ready(Some(Ok(pb::WatchEventsResponse { item: Some(item) })))
            }
            // The producer left without a reason (the client is gone), or
            // its reason is still on the way: `end` wakes us.
            Poll::Ready(None) if self.end.is_none() => Poll::Ready(None),
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }
}

#[tonic::async_trait]
impl ConversationService for ConversationsApi {
    type WatchEventsStream = WatchEventsStream;

    #[tracing::instrument(level = "debug", skip_all)]
    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let mut f = Fields::default();
        let query = Self::event_query(
            &mut f,
            &caller,
            req.after_sequence,
            &req.conversation_id,
            &req.visitor_id,
            &req.event_types,
        );
        let query = f.done(Some(query))?;
        let kind = if query.conversation_id.is_some() {
            "conversation"
        } else {
            "workspace"
        };
        let (subscription, permit) = self.app.watch_events(&caller, &query).await?;
        Ok(Response::new(WatchEventsStream {
            _open: OpenStream::new(kind),
            _permit: permit,
            items: subscription.items,
            end: Some(subscription.end),
            role: caller.role,
            yielded: query.after_sequence,
            session_expire: caller.session.as_ref().map(|grant| grant.expire_time),
            delivery_lag: ::metrics::histogram!(crate::metrics::DELIVERY_LAG),
            delivered: ::metrics::counter!(crate::metrics::EVENTS_DELIVERED),
        }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let mut f = Fields::default();
        let query = Self::event_query(
            &mut f,
            &caller,
            req.after_sequence,
            &req.conversation_id,
            &req.visitor_id,
            &req.event_types,
        );
        let size = page_size(&mut f, req.page_size);
        let query = f.done(Some(query))?;
        let page = self.app.list_events(&caller, &query, size).await?;
        Ok(Response::new(pb::ListEventsResponse {
            events: page
                .events
                .iter()
                .map(|e| to_event(e, caller.role))
                .collect(),
            next_after_sequence: page.next_after_sequence,
            head_sequence: page.head_sequence,
        }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn start_conversation(
        &self,
        request: Request<pb::StartConversationRequest>,
    ) -> Result<Response<pb::StartConversationResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let mut f = Fields::default();
        let visitor_id = f.check(
            "visitor_id",
            VisitorId::parse(Self::visitor(&caller, &req.visitor_id)),
        );
        let agent = req
            .agent
            .as_ref()
            .map(|a| convert::agent(&mut f, "agent", Some(a)));
        let request_id = f.optional("request_id", &req.request_id, RequestId::parse);
        let flow_id = f
            .optional("flow_id", &req.flow_id, FlowId::parse)
            .map(|id| id.as_str().to_owned());
        let command = f.done((|| {
            Some(Command::Start {
                visitor_id: visitor_id?,
                agent: agent.flatten(),
                flow_id,
            })
        })())?;
        let outcome = self.run(&caller, request_id, command).await?;
        Ok(Response::new(pb::StartConversationResponse {
            conversation: Some(to_conversation(&outcome.conversation, caller.role)),
            event_sequence: outcome.event_sequence,
        }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn get_conversation(
        &self,
        request: Request<pb::GetConversationRequest>,
    ) -> Result<Response<pb::GetConversationResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let mut f = Fields::default();
        let conversation_id = f.check(
            "conversation_id",
            ConversationId::parse(&req.conversation_id),
        );
        let visitor_id = f.optional(
            "visitor_id",
            Self::visitor(&caller, &req.visitor_id),
            VisitorId::parse,
        );
        let conversation_id = f.done(conversation_id)?;
        let conversation = self
            .app
            .get_conversation(&caller, &conversation_id, visitor_id.as_ref())
            .await?;
        Ok(Response::new(pb::GetConversationResponse {
            conversation: Some(to_conversation(&conversation, caller.role)),
        }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn list_conversations(
        &self,
        request: Request<pb::ListConversationsRequest>,
    ) -> Result<Response<pb::ListConversationsResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let mut f = Fields::default();
        let statuses = convert::statuses(&mut f, &req.statuses);
        let assignee_agent_id =
            f.optional("assignee_agent_id", &req.assignee_agent_id, AgentId::parse);
        let assignee = match (assignee_agent_id, req.unassigned) {
            (Some(agent_id), false) => AssigneeFilter::Agent(agent_id),
            (None, true) => AssigneeFilter::Unassigned,
            (None, false) => AssigneeFilter::Any,
            (Some(_), true) => {
                f.violation(
                    "unassigned",
                    "cannot be set with assignee_agent_id: filter by one agent or by nobody",
                );
                AssigneeFilter::Any
            }
        };
        let visitor_id = f.optional(
            "visitor_id",
            Self::visitor(&caller, &req.visitor_id),
            VisitorId::parse,
        );
        let size = page_size(&mut f, req.page_size);
        let filter = f.done(Some(ListFilter {
            statuses,
            assignee,
            visitor_id,
        }))?;
        let page = self
            .app
            .list_conversations(&caller, filter, size, page_token(&req.page_token))
            .await?;
        Ok(Response::new(pb::ListConversationsResponse {
            conversations: page
                .conversations
                .iter()
                .map(|c| to_conversation(c, caller.role))
                .collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
            status_counts: Some(status_counts(&page.status_counts)),
            as_of_sequence: page.as_of_sequence,
            filtered_status_counts: page.filtered_status_counts.as_ref().map(status_counts),
        }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::SendMessageResponse>, Status> {
        use pb::send_message_request::Sender as PbSender;
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let mut f = Fields::default();
        let conversation_id = f.check(
            "conversation_id",
            ConversationId::parse(&req.conversation_id),
        );
        let sender = match &req.sender {
            Some(PbSender::Agent(agent)) => {
                convert::agent(&mut f, "agent", Some(agent)).map(Sender::Agent)
            }
            Some(PbSender::VisitorId(visitor_id)) => f
                .check(
                    "visitor_id",
                    VisitorId::parse(Self::visitor(&caller, visitor_id)),
                )
                .map(Sender::Visitor),
            // A visitor session writes as its visitor.
            None if caller.session.is_some() => f
                .check("visitor_id", VisitorId::parse(Self::visitor(&caller, "")))
                .map(Sender::Visitor),
            None => {
                f.violation("sender", "is required: set agent or visitor_id");
                None
            }
        };
        let content = convert::content(&mut f, req.content.as_ref());
        let request_id = f.optional("request_id", &req.request_id, RequestId::parse);
        let audience = convert::audience(&mut f, req.audience, sender.as_ref());
        let command = f.done((|| {
            Some(Command::SendMessage {
                conversation_id: conversation_id?,
                sender: sender?,
                content: content?,
                audience: audience?,
            })
        })())?;
        let outcome = self.run(&caller, request_id, command).await?;
        Ok(Response::new(pb::SendMessageResponse {
            message: outcome.message.as_ref().map(|m| to_message(m, caller.role)),
            conversation: Some(to_conversation(&outcome.conversation, caller.role)),
            event_sequence: outcome.event_sequence,
        }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn list_messages(
        &self,
        request: Request<pb::ListMessagesRequest>,
    ) -> Result<Response<pb::ListMessagesResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let mut f = Fields::default();
        let conversation_id = f.check(
            "conversation_id",
            ConversationId::parse(&req.conversation_id),
        );
        let visitor_id = f.optional(
            "visitor_id",
            Self::visitor(&caller, &req.visitor_id),
            VisitorId::parse,
        );
        let size = page_size(&mut f, req.page_size);
        let conversation_id = f.done(conversation_id)?;
        let page = self
            .app
            .list_messages(
                &caller,
                &conversation_id,
                visitor_id.as_ref(),
                size,
                page_token(&req.page_token),
            )
            .await?;
        Ok(Response::new(pb::ListMessagesResponse {
            messages: page
                .messages
                .iter()
                .map(|m| to_message(m, caller.role))
                .collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn close_conversation(
        &self,
        request: Request<pb::CloseConversationRequest>,
    ) -> Result<Response<pb::CloseConversationResponse>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let (conversation, event_sequence) = self
            .change_status(
                &caller,
                AgentAction::Close,
                &r.conversation_id,
                r.agent.as_ref(),
                &r.etag,
                &r.request_id,
                None,
            )
            .await?;
        Ok(Response::new(pb::CloseConversationResponse {
            conversation: Some(conversation),
            event_sequence,
        }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn mark_conversation_pending(
        &self,
        request: Request<pb::MarkConversationPendingRequest>,
    ) -> Result<Response<pb::MarkConversationPendingResponse>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let (conversation, event_sequence) = self
            .change_status(
                &caller,
                AgentAction::MarkPending,
                &r.conversation_id,
                r.agent.as_ref(),
                &r.etag,
                &r.request_id,
                r.snooze_end_time.as_ref(),
            )
            .await?;
        Ok(Response::new(pb::MarkConversationPendingResponse {
            conversation: Some(conversation),
            event_sequence,
        }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn reopen_conversation(
        &self,
        request: Request<pb::ReopenConversationRequest>,
    ) -> Result<Response<pb::ReopenConversationResponse>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let (conversation, event_sequence) = self
            .change_status(
                &caller,
                AgentAction::Reopen,
                &r.conversation_id,
                r.agent.as_ref(),
                &r.etag,
                &r.request_id,
                None,
            )
            .await?;
        Ok(Response::new(pb::ReopenConversationResponse {
            conversation: Some(conversation),
            event_sequence,
        }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn restart_conversation(
        &self,
        request: Request<pb::RestartConversationRequest>,
    ) -> Result<Response<pb::RestartConversationResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let mut f = Fields::default();
        let conversation_id = f.check(
            "conversation_id",
            ConversationId::parse(&req.conversation_id),
        );
        let visitor_id = f.check(
            "visitor_id",
            VisitorId::parse(Self::visitor(&caller, &req.visitor_id)),
        );
        let request_id = f.optional("request_id", &req.request_id, RequestId::parse);
        let command = f.done((|| {
            Some(Command::Restart {
                conversation_id: conversation_id?,
                visitor_id: visitor_id?,
            })
        })())?;
        let outcome = self.run(&caller, request_id, command).await?;
        Ok(Response::new(pb::RestartConversationResponse {
            conversation: Some(to_conversation(&outcome.conversation, caller.role)),
            event_sequence: outcome.event_sequence,
        }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn assign_conversation(
        &self,
        request: Request<pb::AssignConversationRequest>,
    ) -> Result<Response<pb::AssignConversationResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let mut f = Fields::default();
        let conversation_id = f.check(
            "conversation_id",
            ConversationId::parse(&req.conversation_id),
        );
        let agent = convert::agent(&mut f, "agent", req.agent.as_ref());
        let assignee = match &req.assignee {
            Some(assignee) => convert::agent(&mut f, "assignee", Some(assignee)).map(Some),
            None => Some(None),
        };
        let request_id = f.optional("request_id", &req.request_id, RequestId::parse);
        let etag = (!req.etag.is_empty()).then(|| req.etag.clone());
        let command = f.done((|| {
            Some(Command::Assign {
                conversation_id: conversation_id?,
                agent: agent?,
                assignee: assignee?,
                etag,
            })
        })())?;
        let outcome = self.run(&caller, request_id, command).await?;
        Ok(Response::new(pb::AssignConversationResponse {
            conversation: Some(to_conversation(&outcome.conversation, caller.role)),
            event_sequence: outcome.event_sequence,
        }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn create_visitor_session(
        &self,
        request: Request<pb::CreateVisitorSessionRequest>,
    ) -> Result<Response<pb::CreateVisitorSessionResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let mut f = Fields::default();
        let visitor_id = f.check("visitor_id", VisitorId::parse(&req.visitor_id));
        let ttl = req
            .ttl
            .as_ref()
            .and_then(|ttl| convert::whole_seconds(&mut f, "ttl", ttl));
        let visitor_id = f.done(visitor_id)?;
        let session = self.app.create_visitor_session(&caller, visitor_id, ttl)?;
        Ok(Response::new(pb::CreateVisitorSessionResponse {
            token: session.token,
            session_id: session.session_id,
            expire_time: Some(convert::to_timestamp(session.expire_time)),
        }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn revoke_visitor_session(
        &self,
        request: Request<pb::RevokeVisitorSessionRequest>,
    ) -> Result<Response<pb::RevokeVisitorSessionResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let mut f = Fields::default();
        let session_id = f.check("session_id", convert::session_id(&req.session_id));
        let session_id = f.done(session_id)?;
        self.app
            .revoke_visitor_session(&caller, &session_id)
            .await?;
        Ok(Response::new(pb::RevokeVisitorSessionResponse {}))
    }
}
