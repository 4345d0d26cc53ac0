//! Bad input: INVALID_ARGUMENT naming every bad field in a BadRequest detail,
//! nothing written, and the server serving on as before.

use conversations::pb::{
    self, ConversationStatus,
    send_message_request::{Content, Sender},
};
use prost_types::{Duration, Timestamp};
use tonic::{Code, Response, Status};

use crate::helpers::{
    Client, TestApp, agent_ref, bad_fields, close_request, dana, get_request,
    list_messages_request, mark_pending_request, reason, reopen_request, restart_request, start,
    text_request,
};

const DAY_SECONDS: i64 = 24 * 3600;

/// A running server with one open conversation of visitor `v-1`, and a way
/// to check that a refusal changed nothing.
struct Fixture {
    app: TestApp,
    agent: Client,
    visitor: Client,
    id: String,
}

/// Everything a refused call must leave as it was.
#[derive(Debug, PartialEq)]
struct Snapshot {
    conversations: pb::ListConversationsResponse,
    thread: Vec<pb::Message>,
    head: i64,
}

impl Fixture {
    async fn new() -> Fixture {
        let app = TestApp::spawn().await;
        let mut agent = app.agent().await;
        let visitor = app.visitor().await;
        let id = start(&mut agent, "v-1").await.conversation_id;
        Fixture {
            app,
            agent,
            visitor,
            id,
        }
    }

    /// Also proves the server still answers.
    async fn snapshot(&mut self) -> Snapshot {
        let conversations = self
            .agent
            .list_conversations(pb::ListConversationsRequest {
                page_size: 500,
                ..Default::default()
            })
            .await
            .expect("the server still serves")
            .into_inner();
        let thread = self
            .agent
            .list_messages(pb::ListMessagesRequest {
                conversation_id: self.id.clone(),
                page_size: 500,
                ..Default::default()
            })
            .await
            .expect("the server still serves")
            .into_inner()
            .messages;
        Snapshot {
            conversations,
            thread,
            head: self.app.max_event_sequence().await,
        }
    }

    /// Asserts INVALID_ARGUMENT with exactly `fields` violated, and that
    /// nothing changed since `before`.
    async fn assert_invalid<T: std::fmt::Debug>(
        &mut self,
        before: &Snapshot,
        result: Result<Response<T>, Status>,
        fields: &[&str],
    ) {
        let status = result.expect_err("the request must be refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        let mut got = bad_fields(&status);
        got.sort();
        let mut want: Vec<String> = fields.iter().map(|f| (*f).to_owned()).collect();
        want.sort();
        assert_eq!(got, want, "{status:?}");
        assert_eq!(
            &self.snapshot().await,
            before,
            "a refused call changed something"
        );
    }

    fn text(&self, sender: Sender, text: &str) -> pb::SendMessageRequest {
        text_request(&self.id, sender, text, "")
    }

    fn content(&self, content: Content) -> pb::SendMessageRequest {
        pb::SendMessageRequest {
            conversation_id: self.id.clone(),
            sender: Some(Sender::Agent(dana())),
            content: Some(content),
            request_id: String::new(),
            audience: 0,
        }
    }
}

fn appointment(start_time: Option<Timestamp>, duration: Option<Duration>, url: &str) -> Content {
    Content::Appointment(pb::Appointment {
        start_time,
        duration,
        title: "Demo".into(),
        url: url.to_owned(),
    })
}

fn at() -> Option<Timestamp> {
    Some(Timestamp {
        seconds: 1_900_000_000,
        nanos: 0,
    })
}

fn lasting(seconds: i64, nanos: i32) -> Option<Duration> {
    Some(Duration { seconds, nanos })
}

fn meeting(url: &str) -> Content {
    Content::MeetingLink(pb::MeetingLink {
        url: url.to_owned(),
        provider: "Zoom".into(),
    })
}

fn start_request(visitor_id: &str) -> pb::StartConversationRequest {
    pb::StartConversationRequest {
        visitor_id: visitor_id.to_owned(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_visitor_id_must_have_1_to_128_characters() {
    let mut f = Fixture::new().await;
    let before = f.snapshot().await;
    let too_long = "x".repeat(129);

    for visitor_id in ["", too_long.as_str(), &"é".repeat(129)] {
        let r = f.agent.start_conversation(start_request(visitor_id)).await;
        f.assert_invalid(&before, r, &["visitor_id"]).await;
    }
    let r = f
        .visitor
        .send_message(f.text(Sender::VisitorId(String::new()), "hi"))
        .await;
    f.assert_invalid(&before, r, &["visitor_id"]).await;
    let r = f
        .visitor
        .send_message(f.text(Sender::VisitorId(too_long.clone()), "hi"))
        .await;
    f.assert_invalid(&before, r, &["visitor_id"]).await;
    let r = f
        .visitor
        .restart_conversation(restart_request(&f.id, ""))
        .await;
    f.assert_invalid(&before, r, &["visitor_id"]).await;
    let r = f
        .agent
        .get_conversation(get_request(&f.id, &too_long))
        .await;
    f.assert_invalid(&before, r, &["visitor_id"]).await;

    // The limit counts characters, not bytes.
    for visitor_id in ["x".repeat(128), "é".repeat(128)] {
        let started = f
            .agent
            .start_conversation(start_request(&visitor_id))
            .await
            .expect("128 characters are accepted")
            .into_inner();
        assert_eq!(started.conversation.unwrap().visitor_id, visitor_id);
    }
    f.app.stop().await;
}

#[tokio::test]
async fn every_call_refuses_an_empty_conversation_id() {
    let mut f = Fixture::new().await;
    let before = f.snapshot().await;

    let r = f
        .agent
        .get_conversation(pb::GetConversationRequest::default())
        .await;
    f.assert_invalid(&before, r, &["conversation_id"]).await;
    let r = f
        .agent
        .list_messages(pb::ListMessagesRequest::default())
        .await;
    f.assert_invalid(&before, r, &["conversation_id"]).await;
    let r = f
        .agent
        .send_message(pb::SendMessageRequest {
            conversation_id: String::new(),
            ..f.text(Sender::Agent(dana()), "hi")
        })
        .await;
    f.assert_invalid(&before, r, &["conversation_id"]).await;
    let r = f
        .agent
        .close_conversation(pb::CloseConversationRequest {
            agent: Some(dana()),
            ..Default::default()
        })
        .await;
    f.assert_invalid(&before, r, &["conversation_id"]).await;
    let r = f
        .agent
        .mark_conversation_pending(pb::MarkConversationPendingRequest {
            agent: Some(dana()),
            ..Default::default()
        })
        .await;
    f.assert_invalid(&before, r, &["conversation_id"]).await;
    let r = f
        .agent
        .reopen_conversation(pb::ReopenConversationRequest {
            agent: Some(dana()),
            ..Default::default()
        })
        .await;
    f.assert_invalid(&before, r, &["conversation_id"]).await;
    let r = f
        .visitor
        .restart_conversation(pb::RestartConversationRequest {
            visitor_id: "v-1".into(),
            ..Default::default()
        })
        .await;
    f.assert_invalid(&before, r, &["conversation_id"]).await;
    f.app.stop().await;
}

#[tokio::test]
async fn text_must_say_something_and_fit_in_8_kib() {
    let mut f = Fixture::new().await;
    let before = f.snapshot().await;
    let over_in_ascii = "a".repeat(8193);
    let over_in_multibyte = format!("{}a", "é".repeat(4096));

    for text in ["", " ", "   \n\t ", &over_in_ascii, &over_in_multibyte] {
        let r = f
            .agent
            .send_message(f.text(Sender::Agent(dana()), text))
            .await;
        f.assert_invalid(&before, r, &["text"]).await;
    }

    for text in ["a".repeat(8192), "é".repeat(4096), " x ".to_owned()] {
        let sent = f
            .agent
            .send_message(f.text(Sender::Agent(dana()), &text))
            .await
            .expect("at most 8 KiB with something to say is accepted")
            .into_inner()
            .message
            .unwrap();
        assert_eq!(sent.content, Some(pb::message::Content::Text(text)));
    }
    f.app.stop().await;
}

#[tokio::test]
async fn a_meeting_link_needs_an_https_url() {
    let mut f = Fixture::new().await;
    let before = f.snapshot().await;
    let too_long = format!("https://zoom.us/{}", "j".repeat(2048));

    for url in [
        "",
        "http://zoom.us/j/1",
        "zoom.us/j/1",
        "not a url",
        "javascript:alert(1)",
        "ftp://zoom.us/j/1",
        &too_long,
    ] {
        let r = f.agent.send_message(f.content(meeting(url))).await;
        f.assert_invalid(&before, r, &["meeting_link.url"]).await;
    }

    let sent = f
        .agent
        .send_message(f.content(meeting("https://zoom.us/j/1")))
        .await
        .expect("an https link is accepted")
        .into_inner()
        .message
        .unwrap();
    assert_eq!(
        sent.content,
        Some(pb::message::Content::MeetingLink(pb::MeetingLink {
            url: "https://zoom.us/j/1".into(),
            provider: "Zoom".into(),
        }))
    );
    f.app.stop().await;
}

#[tokio::test]
async fn an_appointment_needs_a_start_and_a_duration_of_at_most_a_day() {
    let mut f = Fixture::new().await;
    let before = f.snapshot().await;

    let cases = [
        (
            appointment(None, lasting(1800, 0), ""),
            "appointment.start_time",
        ),
        (appointment(at(), None, ""), "appointment.duration"),
        (appointment(at(), lasting(0, 0), ""), "appointment.duration"),
        (
            appointment(at(), lasting(-60, 0), ""),
            "appointment.duration",
        ),
        (
            appointment(at(), lasting(0, -1_000), ""),
            "appointment.duration",
        ),
        (
            appointment(at(), lasting(DAY_SECONDS + 1, 0), ""),
            "appointment.duration",
        ),
        (
            appointment(at(), lasting(DAY_SECONDS, 1_000), ""),
            "appointment.duration",
        ),
        (
            appointment(at(), lasting(1800, 0), "http://example.com/book"),
            "appointment.url",
        ),
        (
            appointment(at(), lasting(1800, 0), "not a url"),
            "appointment.url",
        ),
    ];
    for (content, field) in cases {
        let r = f.agent.send_message(f.content(content)).await;
        f.assert_invalid(&before, r, &[field]).await;
    }

    for (duration, url) in [
        (lasting(DAY_SECONDS, 0), "https://example.com/book"),
        (lasting(1, 0), ""),
    ] {
        let content = appointment(at(), duration, url);
        let sent = f
            .agent
            .send_message(f.content(content.clone()))
            .await
            .expect("a valid appointment is accepted")
            .into_inner()
            .message
            .unwrap();
        let Content::Appointment(expected) = content else {
            unreachable!()
        };
        assert_eq!(
            sent.content,
            Some(pb::message::Content::Appointment(expected))
        );
    }
    f.app.stop().await;
}

#[tokio::test]
async fn an_appointment_duration_is_checked_to_the_nanosecond() {
    // A day and a nanosecond is more than 24 hours, and a Duration whose
    // nanos are out of range or of the other sign than its seconds is not a
    // valid google.protobuf.Duration: none may be accepted (and silently
    // rounded into a different duration).
    let mut f = Fixture::new().await;
    let before = f.snapshot().await;
    for (seconds, nanos) in [
        (DAY_SECONDS, 1),
        (DAY_SECONDS, 999),
        (1, 2_000_000_000),
        (1, -5),
    ] {
        let r = f
            .agent
            .send_message(f.content(appointment(at(), lasting(seconds, nanos), "")))
            .await;
        f.assert_invalid(&before, r, &["appointment.duration"])
            .await;
    }
    f.app.stop().await;
}

#[tokio::test]
async fn lengths_of_agent_and_label_fields_are_bounded() {
    let mut f = Fixture::new().await;
    let before = f.snapshot().await;
    let long = |n: usize| "x".repeat(n);

    let r = f
        .agent
        .close_conversation(close_request(
            &f.id,
            agent_ref(&long(129), "Dana", pb::Channel::Slack),
        ))
        .await;
    f.assert_invalid(&before, r, &["agent.agent_id"]).await;
    let r = f
        .agent
        .close_conversation(close_request(
            &f.id,
            agent_ref("agent-dana", &long(129), pb::Channel::Slack),
        ))
        .await;
    f.assert_invalid(&before, r, &["agent.display_name"]).await;
    let r = f
        .agent
        .close_conversation(pb::CloseConversationRequest {
            conversation_id: f.id.clone(),
            agent: None,
            ..Default::default()
        })
        .await;
    f.assert_invalid(&before, r, &["agent"]).await;
    let r = f
        .agent
        .send_message(f.content(Content::MeetingLink(pb::MeetingLink {
            url: "https://zoom.us/j/1".into(),
            provider: long(65),
        })))
        .await;
    f.assert_invalid(&before, r, &["meeting_link.provider"])
        .await;
    let r = f
        .agent
        .send_message(f.content(Content::Appointment(pb::Appointment {
            start_time: at(),
            duration: lasting(60, 0),
            title: long(201),
            url: String::new(),
        })))
        .await;
    f.assert_invalid(&before, r, &["appointment.title"]).await;

    // At the limits they are accepted.
    f.agent
        .send_message(pb::SendMessageRequest {
            sender: Some(Sender::Agent(agent_ref(
                &long(128),
                &long(128),
                pb::Channel::Inbox,
            ))),
            ..f.content(Content::Appointment(pb::Appointment {
                start_time: at(),
                duration: lasting(60, 0),
                title: long(200),
                url: String::new(),
            }))
        })
        .await
        .expect("fields at their limits are accepted");
    f.app.stop().await;
}

#[tokio::test]
async fn every_bad_field_is_reported_at_once() {
    let mut f = Fixture::new().await;
    let before = f.snapshot().await;

    let r = f
        .agent
        .send_message(pb::SendMessageRequest {
            conversation_id: String::new(),
            sender: Some(Sender::Agent(pb::AgentRef {
                agent_id: String::new(),
                display_name: "Dana".into(),
                channel: 99,
            })),
            content: Some(Content::Text("  ".into())),
            request_id: "r".repeat(65),
            audience: 0,
        })
        .await;
    f.assert_invalid(
        &before,
        r,
        &[
            "conversation_id",
            "agent.agent_id",
            "agent.channel",
            "text",
            "request_id",
        ],
    )
    .await;

    let r = f
        .agent
        .send_message(f.content(Content::Appointment(pb::Appointment {
            start_time: None,
            duration: lasting(0, 0),
            title: "x".repeat(201),
            url: "http://example.com".into(),
        })))
        .await;
    f.assert_invalid(
        &before,
        r,
        &[
            "appointment.start_time",
            "appointment.duration",
            "appointment.title",
            "appointment.url",
        ],
    )
    .await;

    let r = f
        .agent
        .start_conversation(pb::StartConversationRequest {
            visitor_id: String::new(),
            agent: Some(pb::AgentRef {
                agent_id: String::new(),
                display_name: "x".repeat(129),
                channel: -1,
            }),
            request_id: "r".repeat(65),
            flow_id: String::new(),
        })
        .await;
    f.assert_invalid(
        &before,
        r,
        &[
            "visitor_id",
            "agent.agent_id",
            "agent.display_name",
            "agent.channel",
            "request_id",
        ],
    )
    .await;

    let r = f
        .agent
        .list_conversations(pb::ListConversationsRequest {
            statuses: vec![0],
            page_size: -5,
            ..Default::default()
        })
        .await;
    f.assert_invalid(&before, r, &["statuses[0]", "page_size"])
        .await;
    f.app.stop().await;
}

#[tokio::test]
async fn send_message_needs_a_sender_and_content() {
    let mut f = Fixture::new().await;
    let before = f.snapshot().await;

    let r = f
        .agent
        .send_message(pb::SendMessageRequest {
            sender: None,
            ..f.text(Sender::Agent(dana()), "hi")
        })
        .await;
    f.assert_invalid(&before, r, &["sender"]).await;
    let r = f
        .agent
        .send_message(pb::SendMessageRequest {
            content: None,
            ..f.text(Sender::Agent(dana()), "hi")
        })
        .await;
    f.assert_invalid(&before, r, &["content"]).await;
    let r = f
        .agent
        .send_message(pb::SendMessageRequest {
            conversation_id: f.id.clone(),
            ..Default::default()
        })
        .await;
    f.assert_invalid(&before, r, &["sender", "content"]).await;
    f.app.stop().await;
}

#[tokio::test]
async fn unknown_enum_values_are_refused() {
    let mut f = Fixture::new().await;
    let before = f.snapshot().await;
    let unknown_channel = || pb::AgentRef {
        channel: 99,
        ..dana()
    };

    let r = f
        .agent
        .start_conversation(pb::StartConversationRequest {
            visitor_id: "v-2".into(),
            agent: Some(unknown_channel()),
            request_id: String::new(),
            flow_id: String::new(),
        })
        .await;
    f.assert_invalid(&before, r, &["agent.channel"]).await;
    let r = f
        .agent
        .send_message(f.text(Sender::Agent(unknown_channel()), "hi"))
        .await;
    f.assert_invalid(&before, r, &["agent.channel"]).await;
    let r = f
        .agent
        .close_conversation(close_request(&f.id, unknown_channel()))
        .await;
    f.assert_invalid(&before, r, &["agent.channel"]).await;
    let r = f
        .agent
        .mark_conversation_pending(pb::MarkConversationPendingRequest {
            conversation_id: f.id.clone(),
            agent: Some(pb::AgentRef {
                channel: -3,
                ..dana()
            }),
            ..Default::default()
        })
        .await;
    f.assert_invalid(&before, r, &["agent.channel"]).await;

    let list = |statuses: Vec<i32>| pb::ListConversationsRequest {
        statuses,
        ..Default::default()
    };
    let r = f
        .agent
        .list_conversations(list(vec![ConversationStatus::Unspecified.into()]))
        .await;
    f.assert_invalid(&before, r, &["statuses[0]"]).await;
    let r = f
        .agent
        .list_conversations(list(vec![ConversationStatus::Open.into(), 99]))
        .await;
    f.assert_invalid(&before, r, &["statuses[1]"]).await;
    f.app.stop().await;
}

#[tokio::test]
async fn a_request_over_64_kib_is_refused_and_the_server_keeps_serving() {
    let mut f = Fixture::new().await;
    let before = f.snapshot().await;

    let refused = f
        .agent
        .start_conversation(start_request(&"v".repeat(100_000)))
        .await
        .expect_err("a request over 64 KiB is refused");
    assert_ne!(refused.code(), Code::Ok);
    assert_eq!(f.snapshot().await, before);

    let refused = f
        .agent
        .send_message(f.text(Sender::Agent(dana()), &"t".repeat(70 * 1024)))
        .await
        .expect_err("a request over 64 KiB is refused");
    assert_ne!(refused.code(), Code::Ok);
    assert_eq!(f.snapshot().await, before);

    // The same clients keep working.
    f.agent
        .start_conversation(start_request("v-2"))
        .await
        .expect("the server still serves");
    f.visitor
        .send_message(f.text(Sender::VisitorId("v-1".into()), "still here"))
        .await
        .expect("the server still serves");
    f.app.stop().await;
}

#[tokio::test]
async fn an_unknown_conversation_id_is_not_found() {
    let mut f = Fixture::new().await;
    let before = f.snapshot().await;

    for id in ["conv_01JD0000000000000000000000", "no-such-conversation"] {
        let id = id.to_owned();
        let mut refusals = vec![
            f.agent
                .get_conversation(get_request(&id, ""))
                .await
                .unwrap_err(),
            f.agent
                .list_messages(list_messages_request(&id, ""))
                .await
                .unwrap_err(),
            f.agent
                .send_message(text_request(&id, Sender::Agent(dana()), "hi", ""))
                .await
                .unwrap_err(),
            f.agent
                .close_conversation(close_request(&id, dana()))
                .await
                .unwrap_err(),
            f.agent
                .mark_conversation_pending(mark_pending_request(&id, dana()))
                .await
                .unwrap_err(),
            f.agent
                .reopen_conversation(reopen_request(&id, dana()))
                .await
                .unwrap_err(),
        ];
        refusals.push(
            f.visitor
                .restart_conversation(restart_request(&id, "v-1"))
                .await
                .unwrap_err(),
        );
        refusals.push(
            f.visitor
                .get_conversation(get_request(&id, "v-1"))
                .await
                .unwrap_err(),
        );
        for refused in refusals {
            assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
            assert_eq!(reason(&refused), "CONVERSATION_NOT_FOUND");
            assert!(refused.message().contains(&id), "{}", refused.message());
        }
        assert_eq!(f.snapshot().await, before);
    }
    f.app.stop().await;
}
