//! Visitors never see agent-only data (issue 8): not which channel an agent
//! acted from, not the answers a flow collected, not a handoff note or any
//! other agents-only message, not an internal note, an assignment or a
//! snooze (issue 10), in any response or event a visitor key can read. One conversation lives through everything that writes such data;
//! then every RPC a visitor key may call is walked, and each answer is
//! searched. The same walk with an agent key finds all of it, so the search
//! is known to look in the right places.

use conversations::pb::{
    self, Audience, AuthorKind, Channel, event::Payload, flow_step::Step, message::Content,
    watch_events_response::Item,
};
use tokio_stream::StreamExt;

use crate::helpers::{
    Client, TestApp, agent_ref, as_visitor, close_request, mark_pending_request, reopen_request,
    restart_request, text_request,
};

const VISITOR: &str = "v-private";
const QUESTION_KEY: &str = "org_name";
const ANSWER: &str = "Hidden Holdings";
/// Words only agents' views contain: channel names (as the Debug rendering
/// of the enum and as the sentences' labels), the question's key, and the
/// handoff note's sentence.
const AGENT_ONLY_WORDS: [&str; 10] = [
    "Slack",
    "MsTeams",
    "MS Teams",
    "Inbox",
    QUESTION_KEY,
    "The visitor is waiting for an agent",
    NOTE,
    "assigned the conversation",
    "snoozed the conversation",
    "snooze_end_time: Some",
];
/// An agent's internal note.
const NOTE: &str = "Budget is 50k, loop in sales engineering";

/// Everything one client was shown: every conversation, message and event
/// (pulled out of whatever carried them), and every answer's rendering.
#[derive(Default)]
struct Seen {
    conversations: Vec<pb::Conversation>,
    messages: Vec<pb::Message>,
    actors: Vec<pb::Author>,
    renderings: Vec<String>,
}

impl Seen {
    fn response(&mut self, response: &impl std::fmt::Debug) {
        self.renderings.push(format!("{response:?}"));
    }

    fn refusal(&mut self, status: &tonic::Status) {
        self.renderings
            .push(format!("{} {:?}", status.message(), status.details()));
    }

    fn conversation(&mut self, conversation: Option<&pb::Conversation>) {
        self.conversations.extend(conversation.into_iter().cloned());
    }

    fn message(&mut self, message: Option<&pb::Message>) {
        self.messages.extend(message.into_iter().cloned());
    }

    fn event(&mut self, event: &pb::Event) {
        self.response(event);
        match &event.payload {
            Some(Payload::ConversationStarted(started)) => {
                self.conversation(started.conversation.as_ref());
            }
            Some(Payload::StatusChanged(changed)) => {
                self.conversation(changed.conversation.as_ref());
                self.actors.extend(changed.actor.clone());
            }
            Some(Payload::MessagePosted(posted)) => self.message(posted.message.as_ref()),
            Some(Payload::ConversationAssigned(assigned)) => {
                self.conversation(assigned.conversation.as_ref());
                self.actors.extend(assigned.actor.clone());
            }
            None => panic!("an event without a payload: {event:?}"),
        }
    }

    /// Every agent author and assignee with the channel it was shown with.
    fn agent_channels(&self) -> Vec<Channel> {
        let authors = self
            .messages
            .iter()
            .flat_map(|m| {
                let actor = match &m.content {
                    Some(Content::Transactional(t)) => t.actor.clone(),
                    _ => None,
                };
                m.author.clone().into_iter().chain(actor)
            })
            .chain(self.actors.iter().cloned())
            .filter(|a| a.kind() == AuthorKind::Agent)
            .map(|a| a.channel());
        let assignees = self
            .conversations
            .iter()
            .filter_map(|c| c.assignee.as_ref())
            .map(pb::AgentRef::channel);
        authors.chain(assignees).collect()
    }

    fn answers(&self) -> usize {
        self.conversations
            .iter()
            .filter_map(|c| c.flow.as_ref())
            .map(|f| f.answers.len())
            .sum()
    }

    fn agent_only_messages(&self) -> usize {
        self.messages
            .iter()
            .filter(|m| m.audience() != Audience::Everyone)
            .count()
    }

    /// The agent-only words found in any rendering.
    fn words(&self) -> Vec<&'static str> {
        AGENT_ONLY_WORDS
            .into_iter()
            .filter(|word| self.renderings.iter().any(|r| r.contains(word)))
            .collect()
    }
}

/// A flow that asks one question and hands off, as the workspace default.
async fn default_flow(app: &TestApp) {
    let mut admin = app.admin().await;
    let flow = admin
        .create_flow(pb::CreateFlowRequest {
            name: "Qualify".into(),
            steps: vec![
                pb::FlowStep {
                    step: Some(Step::Question(pb::QuestionStep {
                        key: QUESTION_KEY.into(),
                        text: "Which company are you with?".into(),
                        choices: vec![],
                    })),
                },
                pb::FlowStep {
                    step: Some(Step::Handoff(pb::HandoffStep {
                        text: "Thanks, someone will join.".into(),
                    })),
                },
            ],
        })
        .await
        .expect("create flow")
        .into_inner()
        .flow
        .expect("flow");
    admin
        .set_default_flow(pb::SetDefaultFlowRequest {
            flow_id: flow.flow_id,
        })
        .await
        .expect("set default flow");
}

/// One conversation through everything that writes agent-only data: a flow
/// that collects an answer and hands off, agents acting from Slack, Teams and
/// the Inbox, a close, a refused visitor message, a restart and a second
/// run. Returns its id and what the visitor key was answered meanwhile.
async fn live_through_everything(app: &TestApp, visitor: &mut Client) -> (String, Seen) {
    let mut seen = Seen::default();
    let mut agent = app.agent().await;
    let slack = agent_ref("agent-sam", "Sam", pb::Channel::Slack);
    let teams = agent_ref("agent-kim", "Kim", pb::Channel::MsTeams);
    let inbox = agent_ref("agent-dana", "Dana", pb::Channel::Inbox);

    let started = visitor
        .start_conversation(pb::StartConversationRequest {
            visitor_id: VISITOR.into(),
            ..Default::default()
        })
        .await
        .expect("start")
        .into_inner();
    seen.response(&started);
    seen.conversation(started.conversation.as_ref());
    let id = started.conversation.expect("conversation").conversation_id;

    let answer_and_hear = |seen: &mut Seen, sent: pb::SendMessageResponse| {
        seen.response(&sent);
        seen.message(sent.message.as_ref());
        seen.conversation(sent.conversation.as_ref());
    };
    let sent = visitor
        .send_message(text_request(&id, as_visitor(VISITOR), ANSWER, ""))
        .await
        .expect("answer")
        .into_inner();
    answer_and_hear(&mut seen, sent);
    agent
        .send_message(text_request(
            &id,
            pb::send_message_request::Sender::Agent(slack.clone()),
            "Hello, happy to help.",
            "",
        ))
        .await
        .expect("agent reply");
    agent
        .send_message(pb::SendMessageRequest {
            audience: Audience::Agents.into(),
            ..text_request(
                &id,
                pb::send_message_request::Sender::Agent(inbox.clone()),
                NOTE,
                "",
            )
        })
        .await
        .expect("note");
    agent
        .assign_conversation(pb::AssignConversationRequest {
            conversation_id: id.clone(),
            agent: Some(inbox.clone()),
            assignee: Some(teams.clone()),
            ..Default::default()
        })
        .await
        .expect("assign");
    let in_a_day = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
        + 86_400;
    agent
        .mark_conversation_pending(pb::MarkConversationPendingRequest {
            snooze_end_time: Some(prost_types::Timestamp {
                seconds: in_a_day,
                nanos: 0,
            }),
            ..mark_pending_request(&id, teams.clone())
        })
        .await
        .expect("snooze");
    agent
        .reopen_conversation(reopen_request(&id, inbox))
        .await
        .expect("reopen");
    agent
        .close_conversation(close_request(&id, slack.clone()))
        .await
        .expect("close");
    let refused = visitor
        .send_message(text_request(&id, as_visitor(VISITOR), "still there?", ""))
        .await
        .expect_err("a closed conversation takes no visitor message");
    seen.refusal(&refused);
    let restarted = visitor
        .restart_conversation(restart_request(&id, VISITOR))
        .await
        .expect("restart")
        .into_inner();
    seen.response(&restarted);
    seen.conversation(restarted.conversation.as_ref());
    let sent = visitor
        .send_message(text_request(&id, as_visitor(VISITOR), ANSWER, ""))
        .await
        .expect("answer again")
        .into_inner();
    answer_and_hear(&mut seen, sent);
    agent
        .send_message(text_request(
            &id,
            pb::send_message_request::Sender::Agent(teams),
            "Back again, how can we help?",
            "",
        ))
        .await
        .expect("second agent reply");
    (id, seen)
}

/// Reads everything of conversation `id` that `client` may read: the
/// conversation, its thread page by page, its events by ListEvents and by
/// WatchEvents. `visitor_id` is empty for agent keys.
async fn read_everything(client: &mut Client, id: &str, visitor_id: &str, seen: &mut Seen) {
    let got = client
        .get_conversation(pb::GetConversationRequest {
            conversation_id: id.into(),
            visitor_id: visitor_id.into(),
        })
        .await
        .expect("get")
        .into_inner();
    seen.response(&got);
    seen.conversation(got.conversation.as_ref());

    // The visitor's conversations, as a widget lists past chats.
    let listed = client
        .list_conversations(pb::ListConversationsRequest {
            visitor_id: VISITOR.into(),
            ..Default::default()
        })
        .await
        .expect("list conversations")
        .into_inner();
    seen.response(&listed);
    for conversation in &listed.conversations {
        seen.conversation(Some(conversation));
    }

    let mut page_token = String::new();
    loop {
        let page = client
            .list_messages(pb::ListMessagesRequest {
                conversation_id: id.into(),
                visitor_id: visitor_id.into(),
                page_size: 2,
                page_token,
            })
            .await
            .expect("list messages")
            .into_inner();
        seen.response(&page);
        for message in &page.messages {
            seen.message(Some(message));
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }

    let mut after = 0;
    let head = loop {
        let page = client
            .list_events(pb::ListEventsRequest {
                after_sequence: after,
                conversation_id: id.into(),
                visitor_id: visitor_id.into(),
                page_size: 3,
                ..Default::default()
            })
            .await
            .expect("list events")
            .into_inner();
        for event in &page.events {
            seen.event(event);
        }
        if page.next_after_sequence >= page.head_sequence {
            break page.head_sequence;
        }
        after = page.next_after_sequence;
    };

    let mut stream = client
        .watch_events(pb::WatchEventsRequest {
            conversation_id: id.into(),
            visitor_id: visitor_id.into(),
            ..Default::default()
        })
        .await
        .expect("watch events")
        .into_inner();
    while let Some(item) = stream.next().await {
        match item.expect("stream item").item {
            Some(Item::Event(event)) => seen.event(&event),
            Some(Item::Checkpoint(checkpoint)) if checkpoint.sequence >= head => break,
            _ => {}
        }
    }
}

#[tokio::test]
async fn a_visitor_key_never_sees_an_agent_channel_a_flow_answer_or_an_agents_only_message() {
    let app = TestApp::spawn().await;
    default_flow(&app).await;
    let mut visitor = app.visitor().await;
    let (id, mut seen_by_visitor) = live_through_everything(&app, &mut visitor).await;
    read_everything(&mut visitor, &id, VISITOR, &mut seen_by_visitor).await;

    let mut seen_by_agent = Seen::default();
    read_everything(&mut app.agent().await, &id, "", &mut seen_by_agent).await;

    // The agent's walk finds each kind of agent-only data...
    assert_eq!(seen_by_agent.words(), AGENT_ONLY_WORDS, "agents see it all");
    assert!(seen_by_agent.answers() > 0, "agents see the flow's answers");
    assert!(seen_by_agent.agent_only_messages() > 0);
    assert!(
        seen_by_agent
            .agent_channels()
            .iter()
            .all(|c| *c != Channel::Unspecified),
        "agents see every agent's channel"
    );

    // ...and the visitor's, over the same conversation, none of it.
    assert!(!seen_by_visitor.messages.is_empty() && !seen_by_visitor.conversations.is_empty());
    assert_eq!(seen_by_visitor.words(), Vec::<&str>::new());
    assert_eq!(seen_by_visitor.answers(), 0, "no flow answers");
    assert_eq!(seen_by_visitor.agent_only_messages(), 0);
    let channels = seen_by_visitor.agent_channels();
    assert!(!channels.is_empty(), "the visitor does see agents act");
    assert!(
        channels.iter().all(|c| *c == Channel::Unspecified),
        "no agent channel: {channels:?}"
    );
    app.stop().await;
}
