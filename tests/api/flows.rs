//! Conversation flows (issue 4): the bot playbook run through the real API.
//! FlowService manages flows (admin keys only); StartConversation runs one,
//! visitor messages answer its questions, an agent message stops it, a
//! restart replays it and an agent reopen does not. Held to the contract in
//! flow_service.proto and conversation.proto (FlowProgress, Message).

use conversations::{
    domain::{credentials::Role, flow::MAX_FLOW_STEPS},
    pb::{
        self, Audience, AuthorKind, ConversationStatus, FlowRunStatus, TransactionalKind,
        bot_message_step, event::Payload, flow_step::Step, message::Content,
        send_message_request::Sender,
    },
};
use tonic::{Code, Status};

use crate::helpers::{
    Client, FlowClient, TestApp, as_visitor, bad_fields, close, close_request, dana, get,
    get_request, list_all, list_messages_request, reason, reopen, restart_request, text_request,
    thread,
};

const VISITOR: &str = "v-1";

// --- flow steps --------------------------------------------------------------

/// A message step that says `text`.
fn say(text: &str) -> pb::FlowStep {
    pb::FlowStep {
        step: Some(Step::Message(pb::BotMessageStep {
            content: Some(bot_message_step::Content::Text(text.to_owned())),
        })),
    }
}

/// A question step.
fn ask(key: &str, text: &str, choices: &[&str]) -> pb::FlowStep {
    pb::FlowStep {
        step: Some(Step::Question(pb::QuestionStep {
            key: key.to_owned(),
            text: text.to_owned(),
            choices: choices.iter().map(|c| (*c).to_owned()).collect(),
        })),
    }
}

/// A handoff step that tells the visitor `text` ("" for nothing).
fn hand_off(text: &str) -> pb::FlowStep {
    pb::FlowStep {
        step: Some(Step::Handoff(pb::HandoffStep {
            text: text.to_owned(),
        })),
    }
}

/// The example: a greeting, two questions and a handoff.
fn greeting() -> Vec<pb::FlowStep> {
    vec![
        say("Hi!"),
        ask("name", "What's your name?", &[]),
        ask(
            "team_size",
            "How big is your team?",
            &["1-10", "11-50", "51+"],
        ),
        hand_off("Thanks, an agent will join."),
    ]
}

// --- calls that must succeed -----------------------------------------------------

async fn create_flow(admin: &mut FlowClient, name: &str, steps: Vec<pb::FlowStep>) -> pb::Flow {
    admin
        .create_flow(pb::CreateFlowRequest {
            name: name.to_owned(),
            steps,
        })
        .await
        .expect("create flow")
        .into_inner()
        .flow
        .expect("flow")
}

async fn update_flow(
    admin: &mut FlowClient,
    flow_id: &str,
    name: &str,
    steps: Vec<pb::FlowStep>,
) -> pb::Flow {
    admin
        .update_flow(pb::UpdateFlowRequest {
            flow_id: flow_id.to_owned(),
            name: name.to_owned(),
            steps,
        })
        .await
        .expect("update flow")
        .into_inner()
        .flow
        .expect("flow")
}

async fn get_flow(admin: &mut FlowClient, flow_id: &str, version: i64) -> pb::Flow {
    admin
        .get_flow(pb::GetFlowRequest {
            flow_id: flow_id.to_owned(),
            version,
        })
        .await
        .expect("get flow")
        .into_inner()
        .flow
        .expect("flow")
}

async fn list_flows(admin: &mut FlowClient) -> Vec<pb::Flow> {
    admin
        .list_flows(pb::ListFlowsRequest {})
        .await
        .expect("list flows")
        .into_inner()
        .flows
}

async fn set_default(admin: &mut FlowClient, flow_id: &str) -> Option<pb::Flow> {
    admin
        .set_default_flow(pb::SetDefaultFlowRequest {
            flow_id: flow_id.to_owned(),
        })
        .await
        .expect("set default flow")
        .into_inner()
        .flow
}

fn start_request(visitor_id: &str, flow_id: &str) -> pb::StartConversationRequest {
    pb::StartConversationRequest {
        visitor_id: visitor_id.to_owned(),
        flow_id: flow_id.to_owned(),
        ..Default::default()
    }
}

/// Starts a conversation with `visitor_id` running `flow_id` ("" for the
/// workspace default).
async fn begin(
    client: &mut Client,
    visitor_id: &str,
    flow_id: &str,
) -> pb::StartConversationResponse {
    client
        .start_conversation(start_request(visitor_id, flow_id))
        .await
        .expect("start")
        .into_inner()
}

/// The visitor `visitor_id` writes `text`; returns the response.
async fn say_as_visitor(
    visitor: &mut Client,
    id: &str,
    visitor_id: &str,
    text: &str,
) -> pb::SendMessageResponse {
    visitor
        .send_message(text_request(id, as_visitor(visitor_id), text, ""))
        .await
        .expect("visitor message")
        .into_inner()
}

// --- reading results -----------------------------------------------------------

fn conversation_of(started: &pb::StartConversationResponse) -> &pb::Conversation {
    started.conversation.as_ref().expect("conversation")
}

fn progress(conversation: &pb::Conversation) -> &pb::FlowProgress {
    conversation
        .flow
        .as_ref()
        .unwrap_or_else(|| panic!("no flow on {conversation:?}"))
}

fn answers(progress: &pb::FlowProgress) -> Vec<(&str, &str)> {
    progress
        .answers
        .iter()
        .map(|a| (a.key.as_str(), a.value.as_str()))
        .collect()
}

/// A message as one line: author kind, audience, and its text (a
/// transactional message's as "[KIND] text").
fn line(message: &pb::Message) -> String {
    let author = message
        .author
        .as_ref()
        .map_or(AuthorKind::Unspecified, pb::Author::kind)
        .as_str_name()
        .trim_start_matches("AUTHOR_KIND_");
    let audience = message
        .audience()
        .as_str_name()
        .trim_start_matches("AUDIENCE_");
    let what = match &message.content {
        Some(Content::Text(text)) => text.clone(),
        Some(Content::Transactional(t)) => format!(
            "[{}] {}",
            t.kind()
                .as_str_name()
                .trim_start_matches("TRANSACTIONAL_KIND_"),
            t.text
        ),
        other => format!("{other:?}"),
    };
    format!("{author} {audience} {what}")
}

fn lines(messages: &[pb::Message]) -> Vec<String> {
    messages.iter().map(line).collect()
}

/// The lines of the bot's messages only.
fn bot_lines(messages: &[pb::Message]) -> Vec<String> {
    messages
        .iter()
        .filter(|m| m.author.as_ref().map(pb::Author::kind) == Some(AuthorKind::Bot))
        .map(line)
        .collect()
}

fn is_flow_handoff(message: &pb::Message) -> bool {
    matches!(&message.content,
        Some(Content::Transactional(t)) if t.kind() == TransactionalKind::FlowHandoff)
}

/// A running server with an admin client, the default workspace's agent and
/// visitor clients, and one flow created from `steps`.
struct Scene {
    app: TestApp,
    admin: FlowClient,
    agent: Client,
    visitor: Client,
    flow: pb::Flow,
}

impl Scene {
    async fn new(steps: Vec<pb::FlowStep>) -> Scene {
        let app = TestApp::spawn().await;
        let mut admin = app.admin().await;
        let flow = create_flow(&mut admin, "Website greeting", steps).await;
        Scene {
            agent: app.agent().await,
            visitor: app.visitor().await,
            admin,
            flow,
            app,
        }
    }

    /// The visitor starts a conversation running the scene's flow; returns
    /// its id.
    async fn start(&mut self) -> String {
        let flow_id = self.flow.flow_id.clone();
        let started = begin(&mut self.visitor, VISITOR, &flow_id).await;
        conversation_of(&started).conversation_id.clone()
    }

    /// The visitor writes `text`; returns the conversation after it.
    async fn answer(&mut self, id: &str, text: &str) -> pb::Conversation {
        say_as_visitor(&mut self.visitor, id, VISITOR, text).await;
        get(&mut self.agent, id, "").await
    }

    /// The whole thread as agents see it.
    async fn agents_thread(&mut self, id: &str) -> Vec<pb::Message> {
        thread(&mut self.agent, id, "").await
    }

    /// The whole thread as the visitor sees it.
    async fn visitors_thread(&mut self, id: &str) -> Vec<pb::Message> {
        thread(&mut self.visitor, id, VISITOR).await
    }
}

// --- start -----------------------------------------------------------------------

#[tokio::test]
async fn start_posts_the_greeting_up_to_the_first_question_for_everyone() {
    let mut s = Scene::new(greeting()).await;
    let started = begin(&mut s.visitor, VISITOR, &s.flow.flow_id).await;
    let conversation = conversation_of(&started);
    let id = conversation.conversation_id.clone();

    let expected = ["BOT EVERYONE Hi!", "BOT EVERYONE What's your name?"];
    let agents = s.agents_thread(&id).await;
    assert_eq!(lines(&agents), expected);
    assert_eq!(
        agents.iter().map(|m| m.position).collect::<Vec<_>>(),
        [1, 2]
    );
    assert!(agents.iter().all(|m| m.quick_replies.is_empty()));
    let visitors = s.visitors_thread(&id).await;
    assert_eq!(visitors, agents);

    let flow = progress(conversation);
    assert_eq!(flow.flow_id, s.flow.flow_id);
    assert_eq!(flow.flow_version, 1);
    assert_eq!(flow.current_step, 1, "the awaited question is steps[1]");
    assert!(flow.answers.is_empty());
    assert_eq!(flow.status(), FlowRunStatus::AwaitingAnswer);
    assert_eq!(conversation.message_count, 2);
    // Reading it back shows the same run, to either key.
    assert_eq!(progress(&get(&mut s.agent, &id, "").await), flow);
    assert_eq!(progress(&get(&mut s.visitor, &id, VISITOR).await), flow);
    s.app.stop().await;
}

#[tokio::test]
async fn a_start_without_flow_id_runs_the_workspace_default() {
    let mut s = Scene::new(greeting()).await;
    let other = create_flow(&mut s.admin, "Other", vec![ask("q", "Other?", &[])]).await;
    let default = set_default(&mut s.admin, &s.flow.flow_id)
        .await
        .expect("the new default");
    assert_eq!(default.flow_id, s.flow.flow_id);
    assert!(default.is_default);

    let started = begin(&mut s.visitor, VISITOR, "").await;
    let conversation = conversation_of(&started);
    assert_eq!(progress(conversation).flow_id, s.flow.flow_id);
    assert_eq!(progress(conversation).flow_version, 1);
    let id = conversation.conversation_id.clone();
    assert_eq!(
        lines(&s.agents_thread(&id).await),
        ["BOT EVERYONE Hi!", "BOT EVERYONE What's your name?"]
    );

    // A named flow wins over the default.
    let started = begin(&mut s.agent, "v-2", &other.flow_id).await;
    let conversation = conversation_of(&started);
    assert_eq!(progress(conversation).flow_id, other.flow_id);
    let id = conversation.conversation_id.clone();
    assert_eq!(lines(&s.agents_thread(&id).await), ["BOT EVERYONE Other?"]);
    s.app.stop().await;
}

#[tokio::test]
async fn a_start_with_neither_flow_id_nor_default_posts_no_bot_message() {
    let mut s = Scene::new(greeting()).await;
    // A flow exists, but it is not the default.
    let started = begin(&mut s.visitor, VISITOR, "").await;
    let conversation = conversation_of(&started);
    assert_eq!(conversation.flow, None);
    assert_eq!(conversation.message_count, 0);
    let id = conversation.conversation_id.clone();
    assert!(s.agents_thread(&id).await.is_empty());
    assert_eq!(get(&mut s.agent, &id, "").await.flow, None);

    // Nor once a default was set and cleared again.
    set_default(&mut s.admin, &s.flow.flow_id).await;
    assert_eq!(set_default(&mut s.admin, "").await, None);
    assert!(list_flows(&mut s.admin).await.iter().all(|f| !f.is_default));
    let started = begin(&mut s.visitor, "v-2", "").await;
    let conversation = conversation_of(&started);
    assert_eq!(conversation.flow, None);
    let id = conversation.conversation_id.clone();
    assert!(s.agents_thread(&id).await.is_empty());
    s.app.stop().await;
}

#[tokio::test]
async fn a_start_with_an_unknown_flow_is_not_found_and_starts_nothing() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let mut visitor = app.visitor().await;
    for client in [&mut agent, &mut visitor] {
        let refused = client
            .start_conversation(start_request(VISITOR, "flow_01UNKNOWN"))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
        assert_eq!(reason(&refused), "FLOW_NOT_FOUND");
    }
    assert!(list_all(&mut agent).await.conversations.is_empty());
    app.stop().await;
}

// --- answers -----------------------------------------------------------------------

#[tokio::test]
async fn an_answer_is_recorded_and_the_bot_asks_the_next_question_with_its_choices() {
    let mut s = Scene::new(greeting()).await;
    let id = s.start().await;

    let conversation = s.answer(&id, "Dana").await;
    let flow = progress(&conversation);
    assert_eq!(answers(flow), [("name", "Dana")]);
    assert_eq!(flow.current_step, 2);
    assert_eq!(flow.status(), FlowRunStatus::AwaitingAnswer);
    assert_eq!(flow.flow_version, 1);

    let agents = s.agents_thread(&id).await;
    assert_eq!(
        lines(&agents),
        [
            "BOT EVERYONE Hi!",
            "BOT EVERYONE What's your name?",
            "VISITOR EVERYONE Dana",
            "BOT EVERYONE How big is your team?",
        ]
    );
    assert_eq!(agents[3].quick_replies, ["1-10", "11-50", "51+"]);
    assert!(agents[..3].iter().all(|m| m.quick_replies.is_empty()));
    // The widget sees the same question with the same quick replies.
    assert_eq!(s.visitors_thread(&id).await, agents);
    s.app.stop().await;
}

#[tokio::test]
async fn a_choice_typed_loosely_is_recorded_in_the_choices_spelling() {
    let mut s = Scene::new(vec![
        ask("team", "Which team?", &["Sales", "Support"]),
        ask("size", "How big is your team?", &["1-10", "11-50", "51+"]),
        ask("exact", "Exactly?", &["1-10", "11-50", "51+"]),
        ask("need", "Anything else?", &["No"]),
    ])
    .await;
    let id = s.start().await;
    s.answer(&id, "  sALES ").await;
    s.answer(&id, "11-50 ").await;
    s.answer(&id, "11-50").await;
    let conversation = s.answer(&id, "  Both, really ").await;

    let flow = progress(&conversation);
    assert_eq!(
        answers(flow),
        [
            ("team", "Sales"),
            ("size", "11-50"),
            ("exact", "11-50"),
            ("need", "Both, really"),
        ]
    );
    // No handoff step: the flow completes quietly after the last answer.
    assert_eq!(flow.status(), FlowRunStatus::Completed);
    assert_eq!(flow.current_step, 4);
    let agents = s.agents_thread(&id).await;
    assert!(!agents.iter().any(is_flow_handoff));
    s.app.stop().await;
}

// --- handoff -----------------------------------------------------------------------

#[tokio::test]
async fn the_handoff_tells_the_agents_with_the_answers_and_the_bot_falls_silent() {
    let mut s = Scene::new(greeting()).await;
    let id = s.start().await;
    s.answer(&id, "Dana").await;
    let conversation = s.answer(&id, "11-50").await;

    let flow = progress(&conversation);
    assert_eq!(flow.status(), FlowRunStatus::HandedOff);
    assert_eq!(answers(flow), [("name", "Dana"), ("team_size", "11-50")]);
    assert_eq!(flow.current_step, 4, "the number of steps once finished");

    let agents = s.agents_thread(&id).await;
    assert_eq!(agents.len(), 7, "{:#?}", lines(&agents));
    assert_eq!(line(&agents[4]), "VISITOR EVERYONE 11-50");
    assert_eq!(line(&agents[5]), "BOT EVERYONE Thanks, an agent will join.");
    let note = &agents[6];
    assert_eq!(note.audience(), Audience::Agents);
    assert_eq!(
        note.author.as_ref().map(pb::Author::kind),
        Some(AuthorKind::System)
    );
    let Some(Content::Transactional(handoff)) = &note.content else {
        panic!("not a transactional message: {note:?}");
    };
    assert_eq!(handoff.kind(), TransactionalKind::FlowHandoff);
    assert_eq!(handoff.from_status(), ConversationStatus::Open);
    assert_eq!(handoff.to_status(), ConversationStatus::Open);
    assert!(
        handoff.text.contains("Dana") && handoff.text.contains("11-50"),
        "the note names the answers: {:?}",
        handoff.text
    );
    assert_eq!(conversation.status(), ConversationStatus::Open);

    // The visitor sees the bot's goodbye but not the agents' note.
    let visitors = s.visitors_thread(&id).await;
    assert_eq!(visitors, agents[..6]);
    let seen_by_visitor = get(&mut s.visitor, &id, VISITOR).await;
    assert_eq!(seen_by_visitor.message_count, 6);
    assert_eq!(conversation.message_count, 7);

    // Later visitor messages get no bot reply and leave the run as it was.
    let after = s.answer(&id, "Anyone there?").await;
    assert_eq!(progress(&after), flow);
    let agents_after = s.agents_thread(&id).await;
    assert_eq!(agents_after[..7], agents[..]);
    assert_eq!(
        lines(&agents_after[7..]),
        ["VISITOR EVERYONE Anyone there?"]
    );
    s.app.stop().await;
}

#[tokio::test]
async fn a_flow_without_questions_hands_off_on_start() {
    let mut s = Scene::new(vec![say("Hi!"), say("Let me find someone."), hand_off("")]).await;
    let started = begin(&mut s.visitor, VISITOR, &s.flow.flow_id).await;
    let conversation = conversation_of(&started);
    let flow = progress(conversation);
    assert_eq!(flow.status(), FlowRunStatus::HandedOff);
    assert_eq!(flow.current_step, 3);
    assert!(flow.answers.is_empty());
    let id = conversation.conversation_id.clone();
    let agents = s.agents_thread(&id).await;
    assert_eq!(
        bot_lines(&agents),
        ["BOT EVERYONE Hi!", "BOT EVERYONE Let me find someone."]
    );
    assert_eq!(agents.len(), 3);
    assert!(is_flow_handoff(&agents[2]));
    assert_eq!(s.visitors_thread(&id).await, agents[..2]);
    s.app.stop().await;
}

// --- restart, reopen, agent takeover --------------------------------------------------

#[tokio::test]
async fn restart_replays_the_flow_from_step_one_and_the_thread_keeps_the_first_run() {
    let mut s = Scene::new(greeting()).await;
    let id = s.start().await;
    s.answer(&id, "Dana").await;
    s.answer(&id, "11-50").await;
    close(&mut s.agent, &id, dana()).await;
    let agents_before = s.agents_thread(&id).await;
    let visitors_before = s.visitors_thread(&id).await;

    let restarted = s
        .visitor
        .restart_conversation(restart_request(&id, VISITOR))
        .await
        .expect("restart")
        .into_inner()
        .conversation
        .expect("conversation");
    assert_eq!(restarted.status(), ConversationStatus::Open);
    let flow = progress(&restarted);
    assert_eq!(flow.flow_id, s.flow.flow_id);
    assert_eq!(flow.flow_version, 1);
    assert_eq!(flow.current_step, 1);
    assert!(flow.answers.is_empty(), "answers are collected afresh");
    assert_eq!(flow.status(), FlowRunStatus::AwaitingAnswer);

    // The first run stays where it was; the replay follows it.
    let agents = s.agents_thread(&id).await;
    assert_eq!(agents[..agents_before.len()], agents_before[..]);
    let replay = &agents[agents_before.len()..];
    assert_eq!(
        bot_lines(replay),
        ["BOT EVERYONE Hi!", "BOT EVERYONE What's your name?"]
    );
    let last = agents_before.last().expect("a thread").position;
    assert!(replay.iter().all(|m| m.position > last));
    let visitors = s.visitors_thread(&id).await;
    assert_eq!(visitors[..visitors_before.len()], visitors_before[..]);
    assert_eq!(
        lines(&visitors[visitors_before.len()..]),
        ["BOT EVERYONE Hi!", "BOT EVERYONE What's your name?"]
    );

    // The new run collects its own answers.
    let conversation = s.answer(&id, "Sam").await;
    assert_eq!(answers(progress(&conversation)), [("name", "Sam")]);
    s.app.stop().await;
}

#[tokio::test]
async fn an_agent_reopen_does_not_replay_the_flow() {
    let mut s = Scene::new(greeting()).await;
    let id = s.start().await;
    let before = s.answer(&id, "Dana").await;
    let closed = close(&mut s.agent, &id, dana())
        .await
        .conversation
        .expect("conversation");
    // The close is an agent's action: the run stopped where it stood.
    assert_eq!(progress(&closed).status(), FlowRunStatus::Stopped);
    assert_eq!(
        progress(&closed).current_step,
        progress(&before).current_step
    );
    assert_eq!(progress(&closed).answers, progress(&before).answers);
    let thread_before = s.agents_thread(&id).await;

    let reopened = reopen(&mut s.agent, &id, dana())
        .await
        .conversation
        .expect("conversation");
    assert_eq!(reopened.status(), ConversationStatus::Open);
    assert_eq!(reopened.flow, closed.flow);

    let agents = s.agents_thread(&id).await;
    assert_eq!(agents[..thread_before.len()], thread_before[..]);
    let new = &agents[thread_before.len()..];
    assert_eq!(new.len(), 1, "{:?}", lines(new));
    assert!(
        matches!(&new[0].content, Some(Content::Transactional(t))
            if t.kind() == TransactionalKind::ConversationReopened),
        "{new:?}"
    );
    // The bot said only what it said before the close: no replay.
    assert_eq!(
        bot_lines(&agents),
        [
            "BOT EVERYONE Hi!",
            "BOT EVERYONE What's your name?",
            "BOT EVERYONE How big is your team?",
        ]
    );
    s.app.stop().await;
}

#[tokio::test]
async fn an_agent_message_stops_the_flow_and_the_bot_no_longer_answers() {
    let mut s = Scene::new(greeting()).await;
    let id = s.start().await;
    let sent = s
        .agent
        .send_message(text_request(
            &id,
            Sender::Agent(dana()),
            "Hi, I'm Dana.",
            "",
        ))
        .await
        .expect("agent message")
        .into_inner();
    assert!(sent.message.is_some());
    let stopped = get(&mut s.agent, &id, "").await;
    let flow = progress(&stopped);
    assert_eq!(flow.status(), FlowRunStatus::Stopped);
    assert_eq!(flow.current_step, 1, "the question the agent took over at");
    assert!(flow.answers.is_empty());

    let after = s.answer(&id, "Dana").await;
    assert_eq!(progress(&after), flow, "no answer recorded after a stop");
    assert_eq!(
        lines(&s.agents_thread(&id).await),
        [
            "BOT EVERYONE Hi!",
            "BOT EVERYONE What's your name?",
            "AGENT EVERYONE Hi, I'm Dana.",
            "VISITOR EVERYONE Dana",
        ]
    );
    s.app.stop().await;
}

#[tokio::test]
async fn a_restart_replays_a_flow_an_agent_had_stopped() {
    let mut s = Scene::new(greeting()).await;
    let id = s.start().await;
    s.agent
        .send_message(text_request(&id, Sender::Agent(dana()), "Hello", ""))
        .await
        .expect("agent message");
    close(&mut s.agent, &id, dana()).await;
    s.visitor
        .restart_conversation(restart_request(&id, VISITOR))
        .await
        .expect("restart");
    let conversation = s.answer(&id, "Dana").await;
    let flow = progress(&conversation);
    assert_eq!(flow.status(), FlowRunStatus::AwaitingAnswer);
    assert_eq!(answers(flow), [("name", "Dana")]);
    assert_eq!(
        bot_lines(&s.agents_thread(&id).await),
        [
            "BOT EVERYONE Hi!",
            "BOT EVERYONE What's your name?",
            "BOT EVERYONE Hi!",
            "BOT EVERYONE What's your name?",
            "BOT EVERYONE How big is your team?",
        ]
    );
    s.app.stop().await;
}

// --- versions ------------------------------------------------------------------------

#[tokio::test]
async fn updating_a_flow_leaves_running_conversations_on_their_version() {
    let mut s = Scene::new(greeting()).await;
    let a = s.start().await;
    let v2 = update_flow(
        &mut s.admin,
        &s.flow.flow_id,
        "Website greeting v2",
        vec![
            say("Hello there!"),
            ask("name", "May I have your name?", &[]),
            ask("team_size", "Team size?", &["Small", "Large"]),
            hand_off("Bye for now."),
        ],
    )
    .await;
    assert_eq!(v2.version, 2);

    // A keeps running version 1.
    let conversation = s.answer(&a, "Dana").await;
    let flow = progress(&conversation);
    assert_eq!(flow.flow_version, 1);
    assert_eq!(answers(flow), [("name", "Dana")]);
    let thread_a = s.agents_thread(&a).await;
    let last = thread_a.last().expect("a question");
    assert_eq!(line(last), "BOT EVERYONE How big is your team?");
    assert_eq!(last.quick_replies, ["1-10", "11-50", "51+"]);

    // B, started now, runs version 2.
    let started = begin(&mut s.visitor, "v-2", &s.flow.flow_id).await;
    let b = conversation_of(&started);
    assert_eq!(progress(b).flow_version, 2);
    let b = b.conversation_id.clone();
    assert_eq!(
        lines(&s.agents_thread(&b).await),
        [
            "BOT EVERYONE Hello there!",
            "BOT EVERYONE May I have your name?"
        ]
    );

    // Restarting A replays the version A ran.
    close(&mut s.agent, &a, dana()).await;
    let restarted = s
        .visitor
        .restart_conversation(restart_request(&a, VISITOR))
        .await
        .expect("restart")
        .into_inner()
        .conversation
        .expect("conversation");
    assert_eq!(progress(&restarted).flow_version, 1);
    let replay = &s.agents_thread(&a).await[thread_a.len()..];
    assert_eq!(
        bot_lines(replay),
        ["BOT EVERYONE Hi!", "BOT EVERYONE What's your name?"]
    );
    s.app.stop().await;
}

#[tokio::test]
async fn get_flow_returns_the_newest_version_or_the_one_asked_for() {
    let app = TestApp::spawn().await;
    let mut admin = app.admin().await;
    let v1 = create_flow(&mut admin, "  Website greeting ", greeting()).await;
    assert_eq!(v1.version, 1);
    assert_eq!(v1.name, "Website greeting", "the name is trimmed");
    assert_eq!(v1.steps, greeting());
    assert!(!v1.is_default);
    assert!(v1.flow_id.starts_with("flow_"), "{}", v1.flow_id);

    let v2_steps = vec![say("Hello!"), ask("email", "Your email?", &[])];
    let v2 = update_flow(&mut admin, &v1.flow_id, "Greeting v2", v2_steps.clone()).await;
    assert_eq!(v2.flow_id, v1.flow_id);
    assert_eq!(v2.version, 2);
    assert_eq!(v2.steps, v2_steps);

    assert_eq!(get_flow(&mut admin, &v1.flow_id, 0).await, v2);
    assert_eq!(get_flow(&mut admin, &v1.flow_id, 2).await, v2);
    assert_eq!(get_flow(&mut admin, &v1.flow_id, 1).await, v1);

    for (flow_id, version) in [(v1.flow_id.as_str(), 3), ("flow_01UNKNOWN", 0)] {
        let refused = admin
            .get_flow(pb::GetFlowRequest {
                flow_id: flow_id.to_owned(),
                version,
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
        assert_eq!(reason(&refused), "FLOW_NOT_FOUND");
    }
    let refused = admin
        .update_flow(pb::UpdateFlowRequest {
            flow_id: "flow_01UNKNOWN".into(),
            name: "x".into(),
            steps: greeting(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::NotFound);
    assert_eq!(reason(&refused), "FLOW_NOT_FOUND");
    app.stop().await;
}

#[tokio::test]
async fn list_flows_shows_the_newest_version_of_each_and_which_is_default() {
    let app = TestApp::spawn().await;
    let mut admin = app.admin().await;
    assert!(list_flows(&mut admin).await.is_empty());
    let a = create_flow(&mut admin, "A", greeting()).await;
    let a2 = update_flow(&mut admin, &a.flow_id, "A2", vec![say("A2")]).await;
    let b = create_flow(&mut admin, "B", vec![say("B")]).await;

    let mut expected = vec![a2.clone(), b.clone()];
    expected.sort_by(|x, y| x.flow_id.cmp(&y.flow_id));
    assert_eq!(list_flows(&mut admin).await, expected);

    set_default(&mut admin, &b.flow_id).await;
    let listed = list_flows(&mut admin).await;
    let defaults: Vec<(&str, bool)> = listed
        .iter()
        .map(|f| (f.name.as_str(), f.is_default))
        .collect();
    let mut want = vec![("A2", false), ("B", true)];
    if a.flow_id > b.flow_id {
        want.reverse();
    }
    assert_eq!(defaults, want);
    assert!(get_flow(&mut admin, &b.flow_id, 0).await.is_default);
    assert!(!get_flow(&mut admin, &a.flow_id, 0).await.is_default);

    // Updating the default keeps it the default.
    let b2 = update_flow(&mut admin, &b.flow_id, "B2", vec![say("B2")]).await;
    assert!(b2.is_default);
    app.stop().await;
}

// --- roles and workspaces -------------------------------------------------------------

/// Every FlowService call, each as `client` makes it.
async fn every_flow_call(client: &mut FlowClient, flow_id: &str) -> Vec<(&'static str, Status)> {
    let mut refusals = Vec::new();
    let created = client
        .create_flow(pb::CreateFlowRequest {
            name: "Mine".into(),
            steps: greeting(),
        })
        .await;
    refusals.push(("CreateFlow", created.map(drop)));
    let got = client
        .get_flow(pb::GetFlowRequest {
            flow_id: flow_id.to_owned(),
            version: 0,
        })
        .await;
    refusals.push(("GetFlow", got.map(drop)));
    let listed = client.list_flows(pb::ListFlowsRequest {}).await;
    refusals.push(("ListFlows", listed.map(drop)));
    let updated = client
        .update_flow(pb::UpdateFlowRequest {
            flow_id: flow_id.to_owned(),
            name: "Mine".into(),
            steps: greeting(),
        })
        .await;
    refusals.push(("UpdateFlow", updated.map(drop)));
    let defaulted = client
        .set_default_flow(pb::SetDefaultFlowRequest {
            flow_id: flow_id.to_owned(),
        })
        .await;
    refusals.push(("SetDefaultFlow", defaulted.map(drop)));
    refusals
        .into_iter()
        .map(|(rpc, result)| match result {
            Ok(()) => panic!("{rpc} was allowed"),
            Err(status) => (rpc, status),
        })
        .collect()
}

#[tokio::test]
async fn agent_and_visitor_keys_are_refused_by_every_flow_call() {
    let mut s = Scene::new(greeting()).await;
    let flow_id = s.flow.flow_id.clone();
    for key in [s.app.agent_key.clone(), s.app.visitor_key.clone()] {
        let mut client = s.app.flows_with(Some(&key)).await;
        for (rpc, status) in every_flow_call(&mut client, &flow_id).await {
            assert_eq!(status.code(), Code::PermissionDenied, "{rpc}: {status:?}");
            assert_eq!(reason(&status), "ROLE_NOT_PERMITTED", "{rpc}");
        }
    }
    let mut anonymous = s.app.flows_with(None).await;
    for (rpc, status) in every_flow_call(&mut anonymous, &flow_id).await {
        assert_eq!(status.code(), Code::Unauthenticated, "{rpc}: {status:?}");
    }
    // Nothing was created, updated or made default.
    let flows = list_flows(&mut s.admin).await;
    assert_eq!(flows, [s.flow.clone()]);
    s.app.stop().await;
}

#[tokio::test]
async fn admin_keys_are_refused_by_the_conversation_service() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let started = begin(&mut agent, VISITOR, "").await;
    let id = conversation_of(&started).conversation_id.clone();
    let (_, key) = app.new_key("default", Role::Admin).await;
    let mut admin = app.client_with(Some(&key)).await;

    let mut refusals: Vec<(&str, Result<(), Status>)> = Vec::new();
    let r = admin.start_conversation(start_request("v-2", "")).await;
    refusals.push(("StartConversation", r.map(drop)));
    let r = admin.get_conversation(get_request(&id, "")).await;
    refusals.push(("GetConversation", r.map(drop)));
    let r = admin
        .list_conversations(pb::ListConversationsRequest::default())
        .await;
    refusals.push(("ListConversations", r.map(drop)));
    let r = admin.list_messages(list_messages_request(&id, "")).await;
    refusals.push(("ListMessages", r.map(drop)));
    let r = admin
        .send_message(text_request(&id, Sender::Agent(dana()), "hi", ""))
        .await;
    refusals.push(("SendMessage", r.map(drop)));
    let r = admin.close_conversation(close_request(&id, dana())).await;
    refusals.push(("CloseConversation", r.map(drop)));
    let r = admin.list_events(pb::ListEventsRequest::default()).await;
    refusals.push(("ListEvents", r.map(drop)));
    // A stream may be refused at the call or as its first item.
    let r = match admin.watch_events(pb::WatchEventsRequest::default()).await {
        Err(status) => Err(status),
        Ok(stream) => match stream.into_inner().message().await {
            Err(status) => Err(status),
            Ok(item) => panic!("WatchEvents streamed {item:?}"),
        },
    };
    refusals.push(("WatchEvents", r));

    for (rpc, result) in refusals {
        let status = result.expect_err(rpc);
        assert_eq!(status.code(), Code::PermissionDenied, "{rpc}: {status:?}");
        assert_eq!(reason(&status), "ROLE_NOT_PERMITTED", "{rpc}");
    }
    let listed = list_all(&mut agent).await;
    assert_eq!(listed.conversations.len(), 1, "the admin started nothing");
    assert_eq!(
        listed.conversations[0].status(),
        ConversationStatus::Open,
        "the admin closed nothing"
    );
    app.stop().await;
}

#[tokio::test]
async fn another_workspaces_admin_cannot_see_or_change_this_workspaces_flows() {
    let mut s = Scene::new(greeting()).await;
    let flow_id = s.flow.flow_id.clone();
    let (b_agent_key, _) = s.app.new_workspace("b").await;
    let (_, b_admin_key) = s.app.new_key("b", Role::Admin).await;
    let mut b_admin = s.app.flows_with(Some(&b_admin_key)).await;

    assert!(list_flows(&mut b_admin).await.is_empty());
    let refusals = [
        (
            "GetFlow",
            b_admin
                .get_flow(pb::GetFlowRequest {
                    flow_id: flow_id.clone(),
                    version: 1,
                })
                .await
                .map(drop),
        ),
        (
            "UpdateFlow",
            b_admin
                .update_flow(pb::UpdateFlowRequest {
                    flow_id: flow_id.clone(),
                    name: "Hijacked".into(),
                    steps: vec![say("Gotcha")],
                })
                .await
                .map(drop),
        ),
        (
            "SetDefaultFlow",
            b_admin
                .set_default_flow(pb::SetDefaultFlowRequest {
                    flow_id: flow_id.clone(),
                })
                .await
                .map(drop),
        ),
    ];
    for (rpc, result) in refusals {
        let status = result.expect_err(rpc);
        assert_eq!(status.code(), Code::NotFound, "{rpc}: {status:?}");
        assert_eq!(reason(&status), "FLOW_NOT_FOUND", "{rpc}");
    }
    // Workspace b cannot run it either.
    let mut b_agent = s.app.client_with(Some(&b_agent_key)).await;
    let refused = b_agent
        .start_conversation(start_request(VISITOR, &flow_id))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::NotFound);
    assert_eq!(reason(&refused), "FLOW_NOT_FOUND");

    // This workspace's flow is untouched.
    assert_eq!(list_flows(&mut s.admin).await, [s.flow.clone()]);
    s.app.stop().await;
}

// --- bad flows --------------------------------------------------------------------------

/// Creates a flow that must be refused; returns its violated fields.
async fn refused_fields(
    admin: &mut FlowClient,
    name: &str,
    steps: Vec<pb::FlowStep>,
) -> Vec<String> {
    let refused = admin
        .create_flow(pb::CreateFlowRequest {
            name: name.to_owned(),
            steps,
        })
        .await
        .expect_err("a bad flow is refused");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    bad_fields(&refused)
}

#[tokio::test]
async fn bad_flows_are_refused_with_field_violations_and_nothing_is_created() {
    let app = TestApp::spawn().await;
    let mut admin = app.admin().await;
    let too_many: Vec<_> = (0..=MAX_FLOW_STEPS).map(|i| say(&format!("{i}"))).collect();
    let eleven: Vec<String> = (0..11).map(|i| format!("c{i}")).collect();
    let eleven: Vec<&str> = eleven.iter().map(String::as_str).collect();
    let cases: Vec<(&str, &str, Vec<pb::FlowStep>, Vec<&str>)> = vec![
        ("no steps", "F", vec![], vec!["steps"]),
        (
            "a question with an empty text",
            "F",
            vec![ask("name", "", &[])],
            vec!["steps[0].question.text"],
        ),
        (
            "a duplicate choice",
            "F",
            vec![ask("size", "Size?", &["Small", " small "])],
            vec!["steps[0].question.choices[1]"],
        ),
        (
            "too many choices",
            "F",
            vec![ask("pick", "Pick one", &eleven)],
            vec!["steps[0].question.choices"],
        ),
        ("51 steps", "F", too_many, vec!["steps"]),
        (
            "a handoff before the last step",
            "F",
            vec![say("Hi"), hand_off("Bye"), say("Never said")],
            vec!["steps[1]"],
        ),
        (
            "an empty step",
            "F",
            vec![say("Hi"), pb::FlowStep::default()],
            vec!["steps[1]"],
        ),
        (
            "a duplicate question key",
            "F",
            vec![ask("name", "Name?", &[]), ask("name", "Name again?", &[])],
            vec!["steps[1].question.key"],
        ),
        ("no name", " ", greeting(), vec!["name"]),
    ];
    for (what, name, steps, want) in cases {
        assert_eq!(
            refused_fields(&mut admin, name, steps).await,
            want,
            "{what}"
        );
    }
    assert!(list_flows(&mut admin).await.is_empty(), "nothing created");

    // A bad update writes no new version.
    let flow = create_flow(&mut admin, "Good", greeting()).await;
    let refused = admin
        .update_flow(pb::UpdateFlowRequest {
            flow_id: flow.flow_id.clone(),
            name: "Good".into(),
            steps: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(bad_fields(&refused), ["steps"]);
    assert_eq!(get_flow(&mut admin, &flow.flow_id, 0).await, flow);

    // The limit itself is fine.
    let mut fifty: Vec<_> = (1..MAX_FLOW_STEPS).map(|i| say(&format!("{i}"))).collect();
    fifty.push(hand_off(""));
    assert_eq!(create_flow(&mut admin, "Long", fifty).await.steps.len(), 50);
    app.stop().await;
}

#[tokio::test]
async fn every_violation_of_a_bad_flow_is_reported_at_once() {
    let app = TestApp::spawn().await;
    let mut admin = app.admin().await;
    let fields = refused_fields(
        &mut admin,
        "",
        vec![
            ask("Bad Key", "", &["A", "a"]),
            hand_off("Bye"),
            ask("ok", "Fine?", &[]),
        ],
    )
    .await;
    assert_eq!(
        fields,
        [
            "name",
            "steps[0].question.key",
            "steps[0].question.text",
            "steps[0].question.choices[1]",
            "steps[1]",
        ]
    );
    assert!(list_flows(&mut admin).await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn an_empty_step_is_reported_together_with_the_other_violations() {
    let app = TestApp::spawn().await;
    let mut admin = app.admin().await;
    let fields = refused_fields(
        &mut admin,
        "F",
        vec![
            pb::FlowStep::default(),
            ask("name", "", &[]),
            ask("size", "Size?", &["S", "s"]),
        ],
    )
    .await;
    // Indices are the request's, even after the empty step.
    assert_eq!(
        fields,
        [
            "steps[0]",
            "steps[1].question.text",
            "steps[2].question.choices[1]"
        ]
    );
    assert!(list_flows(&mut admin).await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_bad_bot_message_is_reported_at_its_request_field() {
    let app = TestApp::spawn().await;
    let mut admin = app.admin().await;
    let link = pb::FlowStep {
        step: Some(Step::Message(pb::BotMessageStep {
            content: Some(bot_message_step::Content::MeetingLink(pb::MeetingLink {
                url: "http://zoom.us/j/1".into(),
                provider: "Zoom".into(),
            })),
        })),
    };
    let fields = refused_fields(&mut admin, "F", vec![say(" "), link]).await;
    // BadRequest names fields of the request: FlowStep.message is a
    // BotMessageStep whose text and meeting_link.url are the bad ones.
    assert_eq!(
        fields,
        ["steps[0].message.text", "steps[1].message.meeting_link.url"]
    );
    app.stop().await;
}

// --- events -------------------------------------------------------------------------------

async fn events_after(
    client: &mut Client,
    after_sequence: i64,
    id: &str,
    visitor_id: &str,
) -> Vec<pb::Event> {
    client
        .list_events(pb::ListEventsRequest {
            after_sequence,
            conversation_id: id.to_owned(),
            visitor_id: visitor_id.to_owned(),
            event_types: vec![],
            page_size: 1000,
        })
        .await
        .expect("list events")
        .into_inner()
        .events
}

/// An event as one line: "started" or the posted message's line.
fn event_line(event: &pb::Event) -> String {
    match &event.payload {
        Some(Payload::ConversationStarted(_)) => "started".into(),
        Some(Payload::MessagePosted(posted)) => {
            line(posted.message.as_ref().expect("posted message"))
        }
        Some(Payload::StatusChanged(changed)) => format!("status {:?}", changed.to_status()),
        Some(Payload::ConversationAssigned(assigned)) => format!(
            "assigned to {:?}",
            assigned.to_assignee.as_ref().map(|a| a.agent_id.as_str())
        ),
        None => "none".into(),
    }
}

#[tokio::test]
async fn the_bots_messages_are_on_the_event_feed_in_the_mutation_that_caused_them() {
    let mut s = Scene::new(greeting()).await;
    let before = s.app.max_event_sequence().await;
    let started = begin(&mut s.visitor, VISITOR, &s.flow.flow_id).await;
    let id = conversation_of(&started).conversation_id.clone();

    let events = events_after(&mut s.agent, before, &id, "").await;
    assert_eq!(
        events.iter().map(event_line).collect::<Vec<_>>(),
        [
            "started",
            "BOT EVERYONE Hi!",
            "BOT EVERYONE What's your name?"
        ]
    );
    assert!(events.iter().all(|e| e.sequence <= started.event_sequence));
    assert_eq!(
        events.last().map(|e| e.sequence),
        Some(started.event_sequence)
    );
    let Some(Payload::ConversationStarted(first)) = &events[0].payload else {
        panic!("{:?}", events[0]);
    };
    let snapshot = first.conversation.as_ref().expect("conversation");
    assert_eq!(progress(snapshot).status(), FlowRunStatus::AwaitingAnswer);

    // An answer's bot reply belongs to the answer's mutation.
    let answered = say_as_visitor(&mut s.visitor, &id, VISITOR, "Dana").await;
    let events = events_after(&mut s.agent, started.event_sequence, &id, "").await;
    assert_eq!(
        events.iter().map(event_line).collect::<Vec<_>>(),
        [
            "VISITOR EVERYONE Dana",
            "BOT EVERYONE How big is your team?"
        ]
    );
    assert_eq!(
        events.last().map(|e| e.sequence),
        Some(answered.event_sequence)
    );

    // The handoff note is on the agents' feed only.
    let last = say_as_visitor(&mut s.visitor, &id, VISITOR, "51+").await;
    let agents = events_after(&mut s.agent, answered.event_sequence, &id, "").await;
    assert_eq!(agents.len(), 3);
    assert_eq!(agents.last().map(|e| e.sequence), Some(last.event_sequence));
    let note = match &agents[2].payload {
        Some(Payload::MessagePosted(posted)) => posted.message.as_ref().expect("message"),
        other => panic!("{other:?}"),
    };
    assert!(is_flow_handoff(note), "{note:?}");
    let visitors = events_after(&mut s.visitor, answered.event_sequence, &id, VISITOR).await;
    assert_eq!(
        visitors.iter().map(event_line).collect::<Vec<_>>(),
        [
            "VISITOR EVERYONE 51+",
            "BOT EVERYONE Thanks, an agent will join."
        ]
    );
    s.app.stop().await;
}

// --- persistence ------------------------------------------------------------------------

#[tokio::test]
async fn flows_and_a_running_conversations_flow_state_survive_a_restart() {
    let mut s = Scene::new(greeting()).await;
    let flow = set_default(&mut s.admin, &s.flow.flow_id)
        .await
        .expect("default");
    let started = begin(&mut s.visitor, VISITOR, "").await;
    let id = conversation_of(&started).conversation_id.clone();
    let before = s.answer(&id, "Dana").await;
    let thread_before = s.agents_thread(&id).await;

    let app = s.app.restart().await;
    let mut admin = app.admin().await;
    let mut agent = app.agent().await;
    let mut visitor = app.visitor().await;
    assert_eq!(get_flow(&mut admin, &flow.flow_id, 0).await, flow);
    assert_eq!(list_flows(&mut admin).await, std::slice::from_ref(&flow));
    assert_eq!(get(&mut agent, &id, "").await, before);
    assert_eq!(thread(&mut agent, &id, "").await, thread_before);

    // The run carries on where it was.
    say_as_visitor(&mut visitor, &id, VISITOR, "1-10").await;
    let after = get(&mut agent, &id, "").await;
    let run = progress(&after);
    assert_eq!(run.status(), FlowRunStatus::HandedOff);
    assert_eq!(answers(run), [("name", "Dana"), ("team_size", "1-10")]);
    // And the default still runs for new conversations.
    let started = begin(&mut visitor, "v-2", "").await;
    assert_eq!(progress(conversation_of(&started)).flow_id, flow.flow_id);
    app.stop().await;
}

// --- bot and humans (issue 10) ---------------------------------------------------

#[tokio::test]
async fn an_agent_started_conversation_runs_no_default_flow_unless_it_names_one() {
    let mut s = Scene::new(greeting()).await;
    set_default(&mut s.admin, &s.flow.flow_id).await;
    let proactive = |flow_id: &str| pb::StartConversationRequest {
        visitor_id: VISITOR.into(),
        agent: Some(dana()),
        flow_id: flow_id.into(),
        ..Default::default()
    };
    // An agent reaches out from Slack: no bot, and the visitor's first
    // words are a message, not the answer to a question never asked.
    let started = s
        .agent
        .start_conversation(proactive(""))
        .await
        .expect("start")
        .into_inner();
    let conversation = conversation_of(&started);
    assert_eq!(conversation.flow, None);
    let id = conversation.conversation_id.clone();
    say_as_visitor(&mut s.visitor, &id, VISITOR, "Hi, pricing?").await;
    let agents = s.agents_thread(&id).await;
    assert_eq!(bot_lines(&agents), Vec::<String>::new());
    assert!(!agents.iter().any(is_flow_handoff));
    assert_eq!(get(&mut s.agent, &id, "").await.flow, None);

    // Named, it runs.
    let named = s
        .agent
        .start_conversation(proactive(&s.flow.flow_id))
        .await
        .expect("start")
        .into_inner();
    assert_eq!(
        progress(conversation_of(&named)).status(),
        FlowRunStatus::AwaitingAnswer
    );
    // And a visitor's start still runs the default.
    let by_visitor = begin(&mut s.visitor, "v-2", "").await;
    assert!(conversation_of(&by_visitor).flow.is_some());
    s.app.stop().await;
}

#[tokio::test]
async fn marking_pending_stops_the_flow_so_the_visitors_next_words_are_not_an_answer() {
    let mut s = Scene::new(greeting()).await;
    let id = s.start().await;
    let pending = s
        .agent
        .mark_conversation_pending(crate::helpers::mark_pending_request(&id, dana()))
        .await
        .expect("pending")
        .into_inner()
        .conversation
        .expect("conversation");
    assert_eq!(progress(&pending).status(), FlowRunStatus::Stopped);

    let after = s.answer(&id, "Hi, pricing?").await;
    assert_eq!(
        after.status(),
        ConversationStatus::Open,
        "the reply reopens it"
    );
    assert_eq!(answers(progress(&after)), Vec::<(&str, &str)>::new());
    assert_eq!(
        bot_lines(&s.agents_thread(&id).await),
        ["BOT EVERYONE Hi!", "BOT EVERYONE What's your name?"],
        "the bot asks nothing more"
    );
    s.app.stop().await;
}

#[tokio::test]
async fn the_restart_after_an_auto_close_replays_the_flow_from_the_beginning() {
    let mut s = Scene::new(greeting()).await;
    let mut settings = s.app.settings_admin().await;
    crate::helpers::set_auto_close(&mut settings, Some(1), "We closed this chat.").await;
    let id = s.start().await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    while get(&mut s.agent, &id, "").await.status() != ConversationStatus::Closed {
        assert!(tokio::time::Instant::now() < deadline, "never auto-closed");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let restarted = s
        .visitor
        .restart_conversation(restart_request(&id, VISITOR))
        .await
        .expect("restart")
        .into_inner()
        .conversation
        .expect("conversation");
    assert_eq!(progress(&restarted).status(), FlowRunStatus::AwaitingAnswer);
    assert_eq!(
        bot_lines(&s.visitors_thread(&id).await),
        [
            "BOT EVERYONE Hi!",
            "BOT EVERYONE What's your name?",
            "BOT EVERYONE Hi!",
            "BOT EVERYONE What's your name?",
        ],
        "greeted again after the close"
    );
    s.app.stop().await;
}
