//! The event feed: WatchEvents streams and ListEvents pages, held to the
//! contract in conversation_service.proto (order, completeness, first
//! messages, resuming, scope, how streams end).

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use conversations::{
    feed::FeedConfig,
    pb::{
        self, Audience, AuthorKind, ConversationStatus, EventType,
        conversation_service_client::ConversationServiceClient, event::Payload,
        message::Content as MessageContent, watch_events_response::Item,
    },
};
use tokio::{task::JoinSet, time::timeout};
use tonic::{Code, Status, Streaming, metadata::MetadataValue, transport::Channel};
use tonic_types::StatusExt;

use crate::helpers::{
    Client, TestApp, agent_ref, as_visitor, assign, bad_fields, close, dana, mark_pending, reason,
    reopen, restart_request, start, text_request,
};

/// How long a test waits for the next stream item before it fails. Generous:
/// nothing here should take more than a fraction of it.
const WAIT: Duration = Duration::from_secs(5);

type Feed = Streaming<pb::WatchEventsResponse>;

/// What a subscriber asks for; `conversation_id`/`visitor_id` "" for none.
#[derive(Debug, Clone, Default)]
struct Filter {
    conversation_id: String,
    visitor_id: String,
    event_types: Vec<EventType>,
}

impl Filter {
    fn all() -> Self {
        Self::default()
    }

    fn conversation(id: &str) -> Self {
        Self {
            conversation_id: id.to_owned(),
            ..Self::default()
        }
    }

    fn visitor(id: &str, visitor_id: &str) -> Self {
        Self {
            conversation_id: id.to_owned(),
            visitor_id: visitor_id.to_owned(),
            ..Self::default()
        }
    }

    fn types(types: &[EventType]) -> Self {
        Self {
            event_types: types.to_vec(),
            ..Self::default()
        }
    }

    fn with_types(self, types: &[EventType]) -> Self {
        Self {
            event_types: types.to_vec(),
            ..self
        }
    }

    fn watch(&self, after_sequence: i64) -> pb::WatchEventsRequest {
        pb::WatchEventsRequest {
            after_sequence,
            conversation_id: self.conversation_id.clone(),
            visitor_id: self.visitor_id.clone(),
            event_types: self.event_types.iter().map(|t| *t as i32).collect(),
        }
    }

    fn list(&self, after_sequence: i64, page_size: i32) -> pb::ListEventsRequest {
        pb::ListEventsRequest {
            after_sequence,
            conversation_id: self.conversation_id.clone(),
            visitor_id: self.visitor_id.clone(),
            event_types: self.event_types.iter().map(|t| *t as i32).collect(),
            page_size,
        }
    }

    /// Whether `event` belongs in this filter, as seen by a key of
    /// `visitor_scope` (visitor keys see only messages for everyone).
    fn admits(&self, event: &pb::Event, visitor_scope: bool) -> bool {
        (self.conversation_id.is_empty() || event.conversation_id == self.conversation_id)
            && (self.event_types.is_empty() || self.event_types.contains(&kind(event)))
            && (!visitor_scope || audience(event) == Audience::Everyone)
    }
}

/// Opens a stream that must be accepted.
async fn watch(client: &mut Client, request: pb::WatchEventsRequest) -> Feed {
    client
        .watch_events(request)
        .await
        .expect("watch events")
        .into_inner()
}

/// The status that refused to open a stream.
async fn watch_refused(client: &mut Client, request: pb::WatchEventsRequest) -> Status {
    match client.watch_events(request).await {
        Ok(_) => panic!("the stream was opened; expected a refusal"),
        Err(status) => status,
    }
}

/// The next item of a stream, or the status that ended it. Fails the test if
/// nothing comes within `WAIT` or the stream ends without a status.
async fn next_or_end(feed: &mut Feed) -> Result<Item, Status> {
    let message = timeout(WAIT, feed.message())
        .await
        .expect("a stream item within the wait")?;
    let response = message.expect("the stream ended without a status");
    Ok(response.item.expect("an item is set"))
}

/// The next item of a stream that must stay open.
async fn next_item(feed: &mut Feed) -> Item {
    next_or_end(feed).await.expect("the stream stays open")
}

/// Reads events until a checkpoint at or past `head`; checks on the way that
/// sequences strictly increase and checkpoints never go back.
async fn events_until(feed: &mut Feed, after: i64, head: i64) -> Vec<pb::Event> {
    let mut cursor = after;
    let mut events = Vec::new();
    loop {
        match next_item(feed).await {
            Item::Event(event) => {
                assert!(event.sequence > cursor, "{} after {cursor}", event.sequence);
                cursor = event.sequence;
                events.push(event);
            }
            Item::Checkpoint(checkpoint) => {
                assert!(checkpoint.sequence >= cursor, "checkpoint went back");
                cursor = checkpoint.sequence;
                if cursor >= head {
                    return events;
                }
            }
        }
    }
}

/// Reads items until the stream ends with a status; returns the events, the
/// last sequence received (event or checkpoint, `after` if none) and the
/// status.
async fn read_to_end(feed: &mut Feed, after: i64) -> (Vec<pb::Event>, i64, Status) {
    let mut cursor = after;
    let mut events = Vec::new();
    loop {
        match next_or_end(feed).await {
            Ok(Item::Event(event)) => {
                assert!(event.sequence > cursor, "{} after {cursor}", event.sequence);
                cursor = event.sequence;
                events.push(event);
            }
            Ok(Item::Checkpoint(checkpoint)) => {
                assert!(checkpoint.sequence >= cursor, "checkpoint went back");
                cursor = checkpoint.sequence;
            }
            Err(status) => return (events, cursor, status),
        }
    }
}

/// Every event ListEvents gives `client` for `filter`, paged from 0.
async fn list_all_events(client: &mut Client, filter: &Filter) -> Vec<pb::Event> {
    let mut after = 0;
    let mut events = Vec::new();
    loop {
        let page = client
            .list_events(filter.list(after, 200))
            .await
            .expect("list events")
            .into_inner();
        events.extend(page.events);
        if page.next_after_sequence >= page.head_sequence {
            return events;
        }
        assert!(
            page.next_after_sequence > after,
            "ListEvents made no progress"
        );
        after = page.next_after_sequence;
    }
}

/// The `last_sequence` of an ErrorInfo.
fn last_sequence(status: &Status) -> i64 {
    status
        .get_details_error_info()
        .expect("ErrorInfo")
        .metadata
        .get("last_sequence")
        .expect("last_sequence metadata")
        .parse()
        .expect("a number")
}

fn sequences(events: &[pb::Event]) -> Vec<i64> {
    events.iter().map(|e| e.sequence).collect()
}

fn kind(event: &pb::Event) -> EventType {
    match event.payload.as_ref().expect("payload") {
        Payload::ConversationStarted(_) => EventType::ConversationStarted,
        Payload::StatusChanged(_) => EventType::StatusChanged,
        Payload::MessagePosted(_) => EventType::MessagePosted,
        Payload::ConversationAssigned(_) => EventType::ConversationAssigned,
    }
}

fn kinds(events: &[pb::Event]) -> Vec<EventType> {
    events.iter().map(kind).collect()
}

/// A message's audience; everyone for the other kinds of event.
fn audience(event: &pb::Event) -> Audience {
    match event.payload.as_ref().expect("payload") {
        Payload::MessagePosted(posted) => posted.message.as_ref().expect("message").audience(),
        Payload::ConversationAssigned(_) => Audience::Agents,
        Payload::ConversationStarted(_) | Payload::StatusChanged(_) => Audience::Everyone,
    }
}

fn status_changed(event: &pb::Event) -> &pb::StatusChanged {
    match event.payload.as_ref().expect("payload") {
        Payload::StatusChanged(changed) => changed,
        other => panic!("expected StatusChanged, got {other:?}"),
    }
}

fn posted(event: &pb::Event) -> &pb::Message {
    match event.payload.as_ref().expect("payload") {
        Payload::MessagePosted(posted) => posted.message.as_ref().expect("message"),
        other => panic!("expected MessagePosted, got {other:?}"),
    }
}

/// Sends a text and returns the call's `event_sequence`.
async fn say(
    client: &mut Client,
    id: &str,
    sender: pb::send_message_request::Sender,
    text: &str,
) -> i64 {
    client
        .send_message(text_request(id, sender, text, ""))
        .await
        .expect("send message")
        .into_inner()
        .event_sequence
}

fn agent_sender(agent: pb::AgentRef) -> pb::send_message_request::Sender {
    pb::send_message_request::Sender::Agent(agent)
}

fn alex() -> pb::AgentRef {
    agent_ref("agent-alex", "Alex", pb::Channel::MsTeams)
}

fn sam() -> pb::AgentRef {
    agent_ref("agent-sam", "Sam", pb::Channel::Inbox)
}

/// Restarts `id` as its visitor.
async fn restart(client: &mut Client, id: &str, visitor_id: &str) -> i64 {
    client
        .restart_conversation(restart_request(id, visitor_id))
        .await
        .expect("restart")
        .into_inner()
        .event_sequence
}

/// A tiny seeded xorshift64 PRNG, so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// 0..n
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

// ---- first messages, live delivery, order ----

#[tokio::test]
async fn the_first_item_after_catch_up_is_a_checkpoint_at_the_head() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let id = start(&mut agent, "v-1").await.conversation_id;
    say(&mut agent, &id, as_visitor("v-1"), "hi").await;
    mark_pending(&mut agent, &id, dana()).await;
    let head = app.max_event_sequence().await;
    let everything = list_all_events(&mut agent, &Filter::all()).await;
    assert_eq!(everything.len(), 4);

    let mut feed = watch(&mut agent, Filter::all().watch(0)).await;
    for expected in &everything {
        match next_item(&mut feed).await {
            Item::Event(event) => assert_eq!(event.sequence, expected.sequence),
            Item::Checkpoint(c) => panic!("checkpoint {} before catch-up ended", c.sequence),
        }
    }
    assert_eq!(
        next_item(&mut feed).await,
        Item::Checkpoint(pb::Checkpoint { sequence: head })
    );

    // A filter that skips the newest events still gets the head.
    let mut starts = watch(
        &mut agent,
        Filter::types(&[EventType::ConversationStarted]).watch(0),
    )
    .await;
    assert!(
        matches!(next_item(&mut starts).await, Item::Event(e) if e.sequence == everything[0].sequence)
    );
    assert_eq!(
        next_item(&mut starts).await,
        Item::Checkpoint(pb::Checkpoint { sequence: head })
    );

    // Resuming at the head: nothing to catch up, so the checkpoint comes first.
    let mut resumed = watch(&mut agent, Filter::all().watch(head)).await;
    assert_eq!(
        next_item(&mut resumed).await,
        Item::Checkpoint(pb::Checkpoint { sequence: head })
    );
}

#[tokio::test]
async fn a_mutations_event_sequence_appears_on_an_open_stream() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let id = start(&mut agent, "v-1").await.conversation_id;
    let mut feed = watch(&mut agent, Filter::all().watch(0)).await;
    let caught_up = events_until(&mut feed, 0, app.max_event_sequence().await).await;
    assert_eq!(caught_up.len(), 1);

    let sent = agent
        .send_message(text_request(&id, agent_sender(dana()), "on its way", ""))
        .await
        .expect("send")
        .into_inner();
    let live = events_until(&mut feed, caught_up[0].sequence, sent.event_sequence).await;
    let last = live.last().expect("the new event");
    assert_eq!(last.sequence, sent.event_sequence);
    assert_eq!(last.conversation_id, id);
    // The message, then (Dana's first reply to an unassigned conversation)
    // her assignment.
    assert_eq!(
        kinds(&live),
        [EventType::MessagePosted, EventType::ConversationAssigned]
    );
    assert_eq!(
        posted(&live[0]).message_id,
        sent.message.expect("message").message_id
    );
}

#[tokio::test]
async fn the_events_of_one_mutation_arrive_one_after_another() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let mut visitor = app.visitor().await;
    let id = start(&mut visitor, "v-1").await.conversation_id;
    let other = start(&mut visitor, "v-2").await.conversation_id;
    mark_pending(&mut agent, &id, dana()).await;
    let mut feed = watch(&mut agent, Filter::all().watch(0)).await;
    let head = app.max_event_sequence().await;
    events_until(&mut feed, 0, head).await;

    // A visitor reply on PENDING: the message, the status change back to
    // OPEN, the agents' note. Another conversation's event follows.
    let reply = say(&mut visitor, &id, as_visitor("v-1"), "still there?").await;
    let after = say(&mut visitor, &other, as_visitor("v-2"), "hello").await;
    let live = events_until(&mut feed, head, after).await;
    assert_eq!(sequences(&live), [reply - 2, reply - 1, reply, after]);
    assert_eq!(
        kinds(&live[..3]),
        [
            EventType::MessagePosted,
            EventType::StatusChanged,
            EventType::MessagePosted
        ]
    );
    assert!(live[..3].iter().all(|e| e.conversation_id == id));
    assert_eq!(posted(&live[0]).author.as_ref().unwrap().id, "v-1");
    let changed = status_changed(&live[1]);
    assert_eq!(changed.from_status(), ConversationStatus::Pending);
    assert_eq!(changed.to_status(), ConversationStatus::Open);
    assert!(matches!(
        &posted(&live[2]).content,
        Some(MessageContent::Transactional(t)) if t.to_status() == ConversationStatus::Open
    ));
    assert_eq!(live[3].conversation_id, other);
}

#[tokio::test]
async fn an_idle_stream_sends_heartbeat_checkpoints() {
    let app = TestApp::spawn_with_feed(FeedConfig {
        heartbeat: Duration::from_millis(100),
        ..FeedConfig::default()
    })
    .await;
    let mut agent = app.agent().await;
    start(&mut agent, "v-1").await;
    let head = app.max_event_sequence().await;
    let mut feed = watch(&mut agent, Filter::all().watch(head)).await;
    // The catch-up checkpoint, then two heartbeats, all at the unchanged head.
    for _ in 0..3 {
        assert_eq!(
            next_item(&mut feed).await,
            Item::Checkpoint(pb::Checkpoint { sequence: head })
        );
    }
}

// ---- refusals ----

#[tokio::test]
async fn a_cursor_beyond_the_head_is_out_of_range() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    start(&mut agent, "v-1").await;
    let head = app.max_event_sequence().await;

    let refused = watch_refused(&mut agent, Filter::all().watch(head + 1)).await;
    assert_eq!(refused.code(), Code::OutOfRange, "{refused:?}");
    assert_eq!(reason(&refused), "CURSOR_AHEAD_OF_HEAD");

    let refused = agent
        .list_events(Filter::all().list(head + 1, 0))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::OutOfRange, "{refused:?}");
    assert_eq!(reason(&refused), "CURSOR_AHEAD_OF_HEAD");
}

#[tokio::test]
async fn a_negative_cursor_is_an_invalid_argument() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;

    let refused = watch_refused(&mut agent, Filter::all().watch(-1)).await;
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert_eq!(bad_fields(&refused), ["after_sequence"]);

    let refused = agent
        .list_events(Filter::all().list(-1, 0))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert_eq!(bad_fields(&refused), ["after_sequence"]);
}

#[tokio::test]
async fn an_unspecified_event_type_in_the_filter_is_an_invalid_argument() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let filter = Filter::types(&[EventType::StatusChanged, EventType::Unspecified]);

    let refused = watch_refused(&mut agent, filter.watch(0)).await;
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert_eq!(bad_fields(&refused), ["event_types[1]"]);

    let refused = agent.list_events(filter.list(0, 0)).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert_eq!(bad_fields(&refused), ["event_types[1]"]);
}

// ---- scope ----

#[tokio::test]
async fn an_agent_stream_of_another_workspace_never_sees_this_workspaces_events() {
    let app = TestApp::spawn().await;
    let (other_agent_key, _) = app.new_workspace("other").await;
    let mut agent = app.agent().await;
    let mut other = app.client_with(Some(&other_agent_key)).await;
    let mut feed = watch(&mut other, Filter::all().watch(0)).await;
    assert!(matches!(next_item(&mut feed).await, Item::Checkpoint(_)));

    let id = start(&mut agent, "v-1").await.conversation_id;
    say(&mut agent, &id, agent_sender(dana()), "hi").await;
    close(&mut agent, &id, dana()).await;
    let theirs = start(&mut other, "v-1").await.conversation_id;
    let head = app.workspace_head("other").await;
    assert_eq!(
        head, 1,
        "the other workspace's feed counts its own events only"
    );

    let seen = events_until(&mut feed, 0, head).await;
    assert_eq!(kinds(&seen), [EventType::ConversationStarted]);
    assert_eq!(seen[0].conversation_id, theirs);
    let listed = list_all_events(&mut other, &Filter::all()).await;
    assert_eq!(sequences(&listed), sequences(&seen));

    // Naming this workspace's conversation answers like a missing one.
    let refused = watch_refused(&mut other, Filter::conversation(&id).watch(0)).await;
    assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
    let refused = other
        .list_events(Filter::conversation(&id).list(0, 0))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
}

#[tokio::test]
async fn a_visitor_stream_must_name_its_conversation_and_visitor() {
    let app = TestApp::spawn().await;
    let (_, other_visitor_key) = app.new_workspace("other").await;
    let mut visitor = app.visitor().await;
    let id = start(&mut visitor, "v-1").await.conversation_id;

    let visitor_key = app.visitor_key.clone();
    let cases = [
        (&visitor_key, Filter::all(), Code::InvalidArgument),
        (
            &visitor_key,
            Filter::conversation(&id),
            Code::InvalidArgument,
        ),
        (&visitor_key, Filter::visitor(&id, "v-2"), Code::NotFound),
        (
            &other_visitor_key,
            Filter::visitor(&id, "v-1"),
            Code::NotFound,
        ),
        // visitor_id only narrows a conversation, whatever the key.
        (
            &app.agent_key,
            Filter {
                visitor_id: "v-1".into(),
                ..Filter::all()
            },
            Code::InvalidArgument,
        ),
    ];
    for (key, filter, code) in cases {
        let mut client = app.client_with(Some(key)).await;
        let refused = watch_refused(&mut client, filter.watch(0)).await;
        assert_eq!(refused.code(), code, "watch {filter:?}: {refused:?}");
        let refused = client.list_events(filter.list(0, 0)).await.unwrap_err();
        assert_eq!(refused.code(), code, "list {filter:?}: {refused:?}");
    }
    let refused = watch_refused(&mut visitor, Filter::all().watch(0)).await;
    let mut missing = bad_fields(&refused);
    missing.sort();
    assert_eq!(missing, ["conversation_id", "visitor_id"]);
}

#[tokio::test]
async fn a_visitor_stream_shows_only_its_conversation_and_messages_for_everyone() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let mut visitor = app.visitor().await;
    let id = start(&mut visitor, "v-1").await.conversation_id;
    let other = start(&mut visitor, "v-2").await.conversation_id;
    let filter = Filter::visitor(&id, "v-1");
    let mut feed = watch(&mut visitor, filter.watch(0)).await;
    let started = events_until(&mut feed, 0, app.max_event_sequence().await).await;
    assert_eq!(kinds(&started), [EventType::ConversationStarted]);

    // Every kind of change, with the other conversation busy in between.
    say(&mut agent, &id, agent_sender(dana()), "hi, I'm Dana").await;
    say(&mut visitor, &id, as_visitor("v-1"), "hi Dana").await;
    say(&mut visitor, &other, as_visitor("v-2"), "anyone?").await;
    mark_pending(&mut agent, &id, dana()).await; // note for agents
    mark_pending(&mut agent, &other, dana()).await;
    say(&mut visitor, &id, as_visitor("v-1"), "back").await; // note for agents
    close(&mut agent, &id, alex()).await; // note for agents
    restart(&mut visitor, &id, "v-1").await; // note for agents
    close(&mut agent, &other, dana()).await;
    close(&mut agent, &id, sam()).await; // note for agents
    reopen(&mut agent, &id, dana()).await; // note for everyone
    let head = app.max_event_sequence().await;

    let seen = events_until(&mut feed, started[0].sequence, head).await;
    use EventType::{MessagePosted as Posted, StatusChanged as Changed};
    assert_eq!(
        kinds(&seen),
        [
            Posted, Posted, Changed, Posted, Changed, Changed, Changed, Changed, Changed, Posted
        ]
    );
    assert!(seen.iter().all(|e| e.conversation_id == id));
    assert!(seen.iter().all(|e| audience(e) == Audience::Everyone));
    let texts: Vec<_> = seen
        .iter()
        .filter(|e| kind(e) == Posted)
        .map(|e| match &posted(e).content {
            Some(MessageContent::Text(text)) => text.clone(),
            Some(MessageContent::Transactional(t)) => t.text.clone(),
            other => panic!("unexpected content {other:?}"),
        })
        .collect();
    assert_eq!(
        texts,
        [
            "hi, I'm Dana",
            "hi Dana",
            "back",
            "Dana reopened the conversation."
        ]
    );
    let transitions: Vec<_> = seen
        .iter()
        .filter(|e| kind(e) == Changed)
        .map(|e| {
            let c = status_changed(e);
            (c.from_status(), c.to_status())
        })
        .collect();
    use ConversationStatus::{Closed, Open, Pending};
    assert_eq!(
        transitions,
        [
            (Open, Pending),
            (Pending, Open),
            (Open, Closed),
            (Closed, Open),
            (Open, Closed),
            (Closed, Open)
        ]
    );

    // The conversation in a status change counts what the visitor sees; the
    // agent's view of the same events counts the agents' notes too.
    let counts = |events: &[pb::Event]| -> Vec<i64> {
        events
            .iter()
            .filter(|e| kind(e) == Changed)
            .map(|e| {
                status_changed(e)
                    .conversation
                    .as_ref()
                    .expect("conversation")
                    .message_count
            })
            .collect()
    };
    assert_eq!(counts(&seen), [2, 3, 3, 3, 3, 4]);
    let agents_view = list_all_events(&mut agent, &Filter::conversation(&id)).await;
    assert_eq!(counts(&agents_view), [3, 5, 6, 7, 8, 9]);
    // The visitor's view is the agent's without the agents' notes.
    let expected: Vec<_> = agents_view
        .iter()
        .filter(|e| audience(e) == Audience::Everyone)
        .map(|e| e.sequence)
        .collect();
    assert_eq!(
        sequences(&started)
            .into_iter()
            .chain(sequences(&seen))
            .collect::<Vec<_>>(),
        expected
    );
    let listed = list_all_events(&mut visitor, &filter).await;
    assert_eq!(sequences(&listed), expected);
}

// ---- ListEvents ----

#[tokio::test]
async fn list_events_pages_return_each_event_once_and_skip_past_filtered_ones() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let a = start(&mut agent, "v-1").await.conversation_id;
    let b = start(&mut agent, "v-2").await.conversation_id;
    for i in 0..4 {
        say(&mut agent, &a, as_visitor("v-1"), &format!("a{i}")).await;
        say(&mut agent, &b, as_visitor("v-2"), &format!("b{i}")).await;
    }
    mark_pending(&mut agent, &a, dana()).await;
    close(&mut agent, &b, dana()).await;
    // Trailing events the status filter skips.
    say(&mut agent, &a, agent_sender(dana()), "still pending").await;
    say(&mut agent, &a, agent_sender(dana()), "really").await;
    let head = app.max_event_sequence().await;

    let pages = |filter: Filter| {
        let mut client = agent.clone();
        async move {
            let mut after = 0;
            let mut pages = Vec::new();
            loop {
                let page = client
                    .list_events(filter.list(after, 3))
                    .await
                    .expect("list events")
                    .into_inner();
                assert_eq!(page.head_sequence, head);
                assert!(page.events.len() <= 3);
                assert!(page.events.iter().all(|e| e.sequence > after));
                let done = page.events.len() < 3;
                after = page.next_after_sequence;
                pages.push(page);
                if done {
                    return pages;
                }
            }
        }
    };

    let all = pages(Filter::all()).await;
    let seen: Vec<_> = all.iter().flat_map(|p| sequences(&p.events)).collect();
    assert_eq!(seen, (1..=head).collect::<Vec<_>>());
    for page in &all[..all.len() - 1] {
        assert_eq!(page.next_after_sequence, page.events[2].sequence);
    }
    assert_eq!(all.last().unwrap().next_after_sequence, head);

    let changes = pages(Filter::types(&[EventType::StatusChanged])).await;
    let seen: Vec<_> = changes.iter().flat_map(|p| p.events.iter()).collect();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|e| kind(e) == EventType::StatusChanged));
    let last = changes.last().unwrap();
    assert!(last.events.len() < 3);
    assert_eq!(
        last.next_after_sequence, head,
        "a short page moves the cursor past every filtered-out event"
    );
    // Polling from there finds nothing new and stays at the head.
    let again = agent
        .list_events(Filter::types(&[EventType::StatusChanged]).list(head, 3))
        .await
        .unwrap()
        .into_inner();
    assert!(again.events.is_empty());
    assert_eq!(again.next_after_sequence, head);
}

#[tokio::test]
async fn a_conversations_status_history_is_its_status_changed_events() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let mut visitor = app.visitor().await;
    let id = start(&mut visitor, "v-1").await.conversation_id;
    let other = start(&mut visitor, "v-2").await.conversation_id;
    mark_pending(&mut agent, &id, dana()).await;
    close(&mut agent, &other, alex()).await;
    say(&mut visitor, &id, as_visitor("v-1"), "hello?").await;
    close(&mut agent, &id, alex()).await;
    restart(&mut visitor, &id, "v-1").await;
    reopen(&mut agent, &other, dana()).await;
    close(&mut agent, &id, sam()).await;
    reopen(&mut agent, &id, sam()).await;

    let history = list_all_events(
        &mut agent,
        &Filter::conversation(&id).with_types(&[EventType::StatusChanged]),
    )
    .await;
    let rows: Vec<_> = history
        .iter()
        .map(|e| {
            assert_eq!(e.conversation_id, id);
            let c = status_changed(e);
            let actor = c.actor.as_ref().expect("actor");
            (
                c.from_status(),
                c.to_status(),
                actor.kind(),
                actor.id.as_str(),
                actor.channel(),
            )
        })
        .collect();
    use ConversationStatus::{Closed, Open, Pending};
    use pb::Channel::{Inbox, MsTeams, Slack, Widget};
    assert_eq!(
        rows,
        [
            (Open, Pending, AuthorKind::Agent, "agent-dana", Slack),
            (Pending, Open, AuthorKind::Visitor, "v-1", Widget),
            (Open, Closed, AuthorKind::Agent, "agent-alex", MsTeams),
            (Closed, Open, AuthorKind::Visitor, "v-1", Widget),
            (Open, Closed, AuthorKind::Agent, "agent-sam", Inbox),
            (Closed, Open, AuthorKind::Agent, "agent-sam", Inbox),
        ]
    );
    assert!(history.iter().all(|e| e.create_time.is_some()));
    assert!(history.windows(2).all(|w| w[0].sequence < w[1].sequence));
}

// ---- how streams end, and resuming ----

#[tokio::test]
async fn a_stream_cut_by_a_restart_resumes_on_the_new_server_without_gap_or_duplicate() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let mut visitor = app.visitor().await;
    let id = start(&mut visitor, "v-1").await.conversation_id;
    for i in 0..5 {
        say(&mut visitor, &id, as_visitor("v-1"), &format!("m{i}")).await;
    }
    mark_pending(&mut agent, &id, dana()).await;

    let mut feed = watch(&mut agent, Filter::all().watch(0)).await;
    let mut first = Vec::new();
    while first.len() < 4 {
        if let Item::Event(event) = next_item(&mut feed).await {
            first.push(event);
        }
    }
    close(&mut agent, &id, dana()).await;
    // Whatever the old server still sends, read while it shuts down.
    let after = first.last().unwrap().sequence;
    let rest = tokio::spawn(async move { read_to_end(&mut feed, after).await });

    let app = app.restart().await;
    let (rest, cursor, end) = rest.await.expect("reader");
    assert_eq!(end.code(), Code::Unavailable, "{end:?}");
    assert_eq!(reason(&end), "SERVER_SHUTTING_DOWN");
    assert_eq!(
        last_sequence(&end),
        cursor,
        "last_sequence is what was sent"
    );

    let mut agent = app.agent().await;
    let mut visitor = app.visitor().await;
    restart(&mut visitor, &id, "v-1").await;
    say(&mut agent, &id, agent_sender(dana()), "welcome back").await;
    let head = app.max_event_sequence().await;
    assert!(head > cursor);

    let mut feed = watch(&mut agent, Filter::all().watch(cursor)).await;
    let second = events_until(&mut feed, cursor, head).await;
    let union: Vec<_> = [first, rest, second]
        .iter()
        .flat_map(|events| sequences(events))
        .collect();
    let everything = list_all_events(&mut agent, &Filter::all()).await;
    assert_eq!(union, sequences(&everything));
    assert_eq!(everything.last().unwrap().sequence, head);
}

#[tokio::test]
async fn every_kind_of_event_reads_back_from_the_store_as_it_was_delivered_from_memory() {
    let app = TestApp::spawn().await;
    let mut agent = app.agent().await;
    let mut visitor = app.visitor().await;
    let id = start(&mut visitor, "v-1").await.conversation_id;
    say(&mut visitor, &id, as_visitor("v-1"), "hello").await;
    say(&mut agent, &id, agent_sender(dana()), "hi, Dana here").await;
    assign(&mut agent, &id, dana(), Some(sam())).await;
    mark_pending(&mut agent, &id, dana()).await;
    assign(&mut agent, &id, dana(), None).await;
    close(&mut agent, &id, dana()).await;
    restart(&mut visitor, &id, "v-1").await;
    let from_memory = list_all_events(&mut agent, &Filter::all()).await;
    let mut seen: Vec<_> = kinds(&from_memory);
    seen.sort_by_key(|kind| *kind as i32);
    seen.dedup();
    assert_eq!(
        seen,
        [
            EventType::ConversationStarted,
            EventType::StatusChanged,
            EventType::MessagePosted,
            EventType::ConversationAssigned,
        ],
        "every kind is on the feed"
    );

    // A new server holds no recent events: every read comes from the store.
    let app = app.restart().await;
    let mut agent = app.agent().await;
    assert_eq!(
        list_all_events(&mut agent, &Filter::all()).await,
        from_memory
    );
    let mut feed = watch(&mut agent, Filter::all().watch(0)).await;
    let head = from_memory.last().unwrap().sequence;
    assert_eq!(events_until(&mut feed, 0, head).await, from_memory);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscriber_that_stops_reading_is_cut_off_and_resumes_without_loss() {
    const SLOW_AFTER: Duration = Duration::from_millis(200);
    const WRITERS: usize = 10;
    const MESSAGES_EACH: usize = 15;
    let app = TestApp::spawn_with_feed(FeedConfig {
        batch: 8,
        heartbeat: Duration::from_secs(30),
        slow_after: SLOW_AFTER,
        ..FeedConfig::default()
    })
    .await;
    let mut agent = app.agent().await;
    let id = start(&mut agent, "v-1").await.conversation_id;

    // The reader's own connection, with 64 KiB HTTP/2 windows instead of the
    // default 2 MiB: the server only pulls from the stream what the window
    // lets it send, so with the channel the pipe holds a few hundred KiB at
    // most, and the writers below put about 1.1 MB through it.
    let channel = Channel::from_shared(format!("http://{}", app.addr))
        .expect("uri")
        .initial_stream_window_size(64 * 1024)
        .initial_connection_window_size(64 * 1024)
        .connect()
        .await
        .expect("connect");
    let bearer: MetadataValue<_> = format!("Bearer {}", app.agent_key).parse().expect("key");
    let mut reader = ConversationServiceClient::with_interceptor(
        channel,
        move |mut request: tonic::Request<()>| {
            request
                .metadata_mut()
                .insert("authorization", bearer.clone());
            Ok(request)
        },
    );
    let mut feed = reader
        .watch_events(Filter::all().watch(0))
        .await
        .expect("watch")
        .into_inner();

    // Writers on their own connections, side by side, while nobody reads.
    let text = "lorem ipsum ".repeat(600); // 7200 bytes
    let mut writing = JoinSet::new();
    for w in 0..WRITERS {
        let mut writer = app.agent().await;
        let (id, text) = (id.clone(), text.clone());
        writing.spawn(async move {
            for _ in 0..MESSAGES_EACH {
                say(&mut writer, &id, agent_sender(dana()), &text).await;
            }
            w
        });
    }
    let mut finished = 0;
    while let Some(done) = writing.join_next().await {
        done.expect("writer");
        finished += 1;
    }
    assert_eq!(
        finished, WRITERS,
        "every write completed while the stream was unread"
    );
    let head = app.max_event_sequence().await;
    // Nothing observable tells when the server gives up on a stream it is
    // blocked on; give it several times its `slow_after`.
    tokio::time::sleep(SLOW_AFTER * 5).await;

    let (received, cursor, end) = read_to_end(&mut feed, 0).await;
    assert_eq!(end.code(), Code::ResourceExhausted, "{end:?}");
    assert_eq!(reason(&end), "SUBSCRIBER_TOO_SLOW");
    assert_eq!(
        last_sequence(&end),
        cursor,
        "last_sequence is what was sent"
    );
    assert!(cursor < head, "the stream was cut off before the end");
    assert!(!received.is_empty());

    let mut feed = watch(&mut agent, Filter::all().watch(cursor)).await;
    let rest = events_until(&mut feed, cursor, head).await;
    let union: Vec<_> = sequences(&received)
        .into_iter()
        .chain(sequences(&rest))
        .collect();
    let everything = list_all_events(&mut agent, &Filter::all()).await;
    // The start, every message, and the assignment of the first reply.
    assert_eq!(everything.len(), 2 + WRITERS * MESSAGES_EACH);
    assert_eq!(union, sequences(&everything));
}

/// Reads with `filter`, dropping the stream after a random number of items
/// and resuming from the last sequence received, until it has a checkpoint
/// at or past `final_head` (unknown while it is `i64::MAX`). Returns the
/// events.
async fn subscribe(
    mut client: Client,
    filter: Filter,
    seed: u64,
    final_head: Arc<AtomicI64>,
) -> Vec<pb::Event> {
    let mut rng = Rng::new(seed);
    let mut cursor = 0;
    let mut events = Vec::new();
    let mut streams = 0;
    loop {
        let mut feed = watch(&mut client, filter.watch(cursor)).await;
        streams += 1;
        for _ in 0..=rng.below(20) {
            match next_item(&mut feed).await {
                Item::Event(event) => {
                    assert!(event.sequence > cursor, "{} after {cursor}", event.sequence);
                    cursor = event.sequence;
                    events.push(event);
                }
                Item::Checkpoint(checkpoint) => {
                    assert!(checkpoint.sequence >= cursor, "checkpoint went back");
                    cursor = checkpoint.sequence;
                    // Not on the first stream: every subscriber resumes at
                    // least once, however quick the writers were.
                    if streams > 1 && cursor >= final_head.load(Ordering::SeqCst) {
                        return events;
                    }
                }
            }
        }
    }
}

/// One writer's conversation and the status it left it in.
struct Owned {
    id: String,
    visitor_id: String,
    status: ConversationStatus,
}

/// Makes `mutations` random valid changes on its own conversations.
async fn write(
    mut agent: Client,
    mut visitor: Client,
    mut owned: Vec<Owned>,
    mutations: usize,
    seed: u64,
) {
    use ConversationStatus::{Closed, Open, Pending};
    let mut rng = Rng::new(seed);
    for n in 0..mutations {
        let pick = rng.below(owned.len() as u64) as usize;
        let c = &mut owned[pick];
        let (id, v) = (c.id.as_str(), c.visitor_id.as_str());
        let choice = rng.below(4);
        c.status = match (c.status, choice) {
            (Open | Pending, 0) => {
                say(&mut visitor, id, as_visitor(v), &format!("visitor {n}")).await;
                Open
            }
            (status @ (Open | Pending), 1) => {
                say(&mut agent, id, agent_sender(dana()), &format!("agent {n}")).await;
                status
            }
            (Open | Pending, 2) => {
                close(&mut agent, id, alex()).await;
                Closed
            }
            (Open, _) => {
                mark_pending(&mut agent, id, sam()).await;
                Pending
            }
            (Pending, _) => {
                reopen(&mut agent, id, dana()).await;
                Open
            }
            (Closed, 0 | 1) => {
                restart(&mut visitor, id, v).await;
                Open
            }
            (Closed, _) => {
                reopen(&mut agent, id, sam()).await;
                Open
            }
            (ConversationStatus::Unspecified, _) => unreachable!(),
        };
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscribers_that_drop_and_resume_at_random_under_many_writers_miss_nothing() {
    const WRITERS: usize = 8;
    const CONVERSATIONS_PER_WRITER: usize = 3;
    const MUTATIONS_PER_WRITER: usize = 40;
    let app = TestApp::spawn_with_feed(FeedConfig {
        batch: 16,
        heartbeat: Duration::from_millis(100),
        slow_after: Duration::from_secs(10),
        // A window smaller than the traffic: resuming streams cross from
        // the store to memory again and again.
        window: 32,
    })
    .await;
    let (other_agent_key, other_visitor_key) = app.new_workspace("other").await;

    // The last writer works in the other workspace, the rest in the default.
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (agent, mut visitor) = if w < WRITERS - 1 {
            (app.agent().await, app.visitor().await)
        } else {
            (
                app.client_with(Some(&other_agent_key)).await,
                app.client_with(Some(&other_visitor_key)).await,
            )
        };
        let mut owned = Vec::new();
        for c in 0..CONVERSATIONS_PER_WRITER {
            let visitor_id = format!("v-{w}-{c}");
            let id = start(&mut visitor, &visitor_id).await.conversation_id;
            owned.push(Owned {
                id,
                visitor_id,
                status: ConversationStatus::Open,
            });
        }
        writers.push((agent, visitor, owned));
    }
    let conversation = |w: usize, c: usize| writers[w].2[c].id.clone();
    let visitor_of = |w: usize, c: usize| writers[w].2[c].visitor_id.clone();
    let other_ws: HashSet<String> = (0..CONVERSATIONS_PER_WRITER)
        .map(|c| conversation(WRITERS - 1, c))
        .collect();

    let agent_a = app.agent().await;
    let visitor_a = app.visitor().await;
    let agent_b = app.client_with(Some(&other_agent_key)).await;
    use EventType::{ConversationStarted, MessagePosted, StatusChanged};
    // (name, key, filter, whether the key is a visitor's)
    let subscribers = [
        ("workspace", &agent_a, Filter::all(), false),
        (
            "one conversation",
            &agent_a,
            Filter::conversation(&conversation(0, 0)),
            false,
        ),
        (
            "status changes",
            &agent_a,
            Filter::types(&[StatusChanged]),
            false,
        ),
        ("messages", &agent_a, Filter::types(&[MessagePosted]), false),
        (
            "visitor",
            &visitor_a,
            Filter::visitor(&conversation(1, 0), &visitor_of(1, 0)),
            true,
        ),
        (
            "visitor, messages",
            &visitor_a,
            Filter::visitor(&conversation(2, 1), &visitor_of(2, 1)).with_types(&[MessagePosted]),
            true,
        ),
        (
            "one conversation's starts and status changes",
            &agent_a,
            Filter::conversation(&conversation(2, 2))
                .with_types(&[ConversationStarted, StatusChanged]),
            false,
        ),
        ("other workspace", &agent_b, Filter::all(), false),
    ];
    // Whose events each subscriber's must be a filtered copy of.
    const WORKSPACE: usize = 0;
    const OTHER_WORKSPACE: usize = 7;

    // Sequences count per workspace: each subscriber reads to its own
    // workspace's final head.
    let final_head = Arc::new(AtomicI64::new(i64::MAX));
    let other_final_head = Arc::new(AtomicI64::new(i64::MAX));
    let mut reading = JoinSet::new();
    for (i, (_, client, filter, _)) in subscribers.iter().enumerate() {
        let head = if i == OTHER_WORKSPACE {
            other_final_head.clone()
        } else {
            final_head.clone()
        };
        let (client, filter) = ((*client).clone(), filter.clone());
        reading.spawn(async move { (i, subscribe(client, filter, 1000 + i as u64, head).await) });
    }
    let mut writing = JoinSet::new();
    for (w, (agent, visitor, owned)) in writers.into_iter().enumerate() {
        writing.spawn(write(
            agent,
            visitor,
            owned,
            MUTATIONS_PER_WRITER,
            7 + w as u64,
        ));
    }
    while let Some(done) = writing.join_next().await {
        done.expect("writer");
    }
    let head = app.max_event_sequence().await;
    let other_head = app.workspace_head("other").await;
    final_head.store(head, Ordering::SeqCst);
    other_final_head.store(other_head, Ordering::SeqCst);
    let mut received = vec![Vec::new(); subscribers.len()];
    let all_read = timeout(Duration::from_secs(30), async {
        while let Some(done) = reading.join_next().await {
            let (i, result) = done.expect("subscriber");
            received[i] = result;
        }
    })
    .await;
    all_read.expect("every subscriber reaches the final head");

    // Each whole-workspace subscriber gets its workspace's feed, 1, 2, 3...
    let (a, b) = (&received[WORKSPACE], &received[OTHER_WORKSPACE]);
    assert_eq!(
        sequences(a),
        (1..=head).collect::<Vec<_>>(),
        "every event of the workspace"
    );
    assert_eq!(
        sequences(b),
        (1..=other_head).collect::<Vec<_>>(),
        "every event of the other workspace"
    );
    assert!(a.iter().all(|e| !other_ws.contains(&e.conversation_id)));
    assert!(b.iter().all(|e| other_ws.contains(&e.conversation_id)));

    for (i, (name, client, filter, visitor_scope)) in subscribers.iter().enumerate() {
        let events = &received[i];
        let base = if i == OTHER_WORKSPACE {
            OTHER_WORKSPACE
        } else {
            WORKSPACE
        };
        assert!(!events.is_empty(), "{name}: no events");
        let got = sequences(events);
        assert!(got.windows(2).all(|w| w[0] < w[1]), "{name}: order");
        let expected: Vec<_> = received[base]
            .iter()
            .filter(|e| filter.admits(e, *visitor_scope))
            .map(|e| e.sequence)
            .collect();
        assert_eq!(got, expected, "{name}: against the whole feed");
        let mut client = (*client).clone();
        let listed = list_all_events(&mut client, filter).await;
        assert_eq!(got, sequences(&listed), "{name}: against ListEvents");
    }
}

/// A mutation whose caller is dropped mid-commit (a client that reset its
/// call or hit its deadline) still commits; its events must still reach the
/// feed, or open streams would not see them until the next commit.
#[tokio::test]
async fn a_mutation_cancelled_mid_commit_is_still_announced_to_streams() {
    use conversations::domain::{Command, values::VisitorId};
    let app = TestApp::spawn().await;
    let core = app.core().clone();
    let caller = core
        .authenticate(Some(&format!("Bearer {}", app.agent_key)))
        .await
        .expect("agent key");
    for i in 0..150u64 {
        let command = Command::Start {
            visitor_id: VisitorId::parse(&format!("v-{i}")).expect("visitor id"),
            agent: None,
            flow_id: None,
        };
        // Budgets from 20 µs to 2 ms cut the call at every stage, commit included.
        let budget = Duration::from_micros(20 + (i % 40) * 50);
        let _ = tokio::time::timeout(budget, core.execute(&caller, None, command)).await;
        let mut announced = false;
        let mut in_database = 0;
        for _ in 0..200 {
            in_database = app.max_event_sequence().await;
            if core.feed().head(caller.workspace_id) == in_database {
                announced = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            announced,
            "iteration {i}: event {in_database} committed but the feed head stayed at {}",
            core.feed().head(caller.workspace_id)
        );
    }
}
