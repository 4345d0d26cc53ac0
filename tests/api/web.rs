//! Browsers on the normal port: grpc-web over HTTP/1.1 (the generated client
//! through tonic-web's client layer, framing calls as a browser's grpc-web
//! client does), CORS for the origins an operator admits, and the static
//! files of --web-root.

use std::time::Duration;

use bytes::Bytes;
use conversations::{config::CorsOrigin, pb};
use http_body_util::{BodyExt, Empty};
use hyper_util::{
    client::legacy::{Client as HttpClient, connect::HttpConnector},
    rt::TokioExecutor,
};
use tokio_stream::StreamExt;
use tonic::{Code, Request, Status, service::interceptor::InterceptedService};
use tonic_web::{GrpcWebClientLayer, GrpcWebClientService};
use tower_layer::Layer;

use crate::helpers::*;

type Http1 = HttpClient<HttpConnector, tonic_web::GrpcWebCall<tonic::body::Body>>;
type AddToken = Box<dyn FnMut(Request<()>) -> Result<Request<()>, Status> + Send + Sync>;
pub(crate) type WebClient = pb::conversation_service_client::ConversationServiceClient<
    InterceptedService<GrpcWebClientService<Http1>, AddToken>,
>;

/// The generated client speaking grpc-web with `token`, over HTTP/1.1 only
/// or (`http2`) over HTTP/2 without TLS.
pub(crate) fn grpc_web(app: &TestApp, token: &str) -> WebClient {
    grpc_web_over(app, token, false)
}

fn grpc_web_over(app: &TestApp, token: &str, http2: bool) -> WebClient {
    let http1: Http1 = HttpClient::builder(TokioExecutor::new())
        .http2_only(http2)
        .build_http();
    let bearer: tonic::metadata::MetadataValue<_> =
        format!("Bearer {token}").parse().expect("header value");
    let add_token: AddToken = Box::new(move |mut request: Request<()>| {
        request
            .metadata_mut()
            .insert("authorization", bearer.clone());
        Ok(request)
    });
    let origin: http::Uri = format!("http://{}", app.addr).parse().expect("uri");
    pb::conversation_service_client::ConversationServiceClient::with_origin(
        InterceptedService::new(GrpcWebClientLayer::new().layer(http1), add_token),
        origin,
    )
}

fn admitting(origins: &[&str]) -> conversations::config::Settings {
    conversations::config::Settings {
        cors_origins: origins
            .iter()
            .map(|o| o.parse::<CorsOrigin>().expect("origin"))
            .collect(),
        ..default_settings()
    }
}

pub(crate) async fn session_token(app: &TestApp, visitor_id: &str) -> String {
    app.visitor()
        .await
        .create_visitor_session(pb::CreateVisitorSessionRequest {
            visitor_id: visitor_id.into(),
            ttl: None,
        })
        .await
        .expect("session")
        .into_inner()
        .token
}

/// A plain HTTP/1.1 request to the server; the status, headers and body.
async fn http1(
    app: &TestApp,
    request: http::request::Builder,
) -> (http::StatusCode, http::HeaderMap, Bytes) {
    let client: HttpClient<HttpConnector, Empty<Bytes>> =
        HttpClient::builder(TokioExecutor::new()).build_http();
    let request = request.body(Empty::new()).expect("request");
    let response = client.request(request).await.expect("answered");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    let _ = app;
    (parts.status, parts.headers, body)
}

fn preflight(app: &TestApp, origin: &str) -> http::request::Builder {
    http::Request::builder()
        .method(http::Method::OPTIONS)
        .uri(format!(
            "http://{}/conversations.v1.ConversationService/StartConversation",
            app.addr
        ))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type,x-grpc-web,x-user-agent",
        )
}

#[tokio::test]
async fn a_browser_session_over_grpc_web_on_http1_writes_reads_and_holds_a_live_stream() {
    let app = TestApp::spawn().await;
    let token = session_token(&app, "v-ada").await;
    let mut browser = grpc_web(&app, &token);
    let id = browser
        .start_conversation(pb::StartConversationRequest::default())
        .await
        .expect("start over grpc-web")
        .into_inner()
        .conversation
        .expect("conversation")
        .conversation_id;
    let mut stream = browser
        .watch_events(pb::WatchEventsRequest {
            conversation_id: id.clone(),
            ..Default::default()
        })
        .await
        .expect("watch over grpc-web")
        .into_inner();
    // An agent answers over plain gRPC; the browser's stream carries it.
    let mut agent = app.agent().await;
    agent
        .send_message(text_request(
            &id,
            pb::send_message_request::Sender::Agent(dana()),
            "Hi! How can I help?",
            "",
        ))
        .await
        .expect("agent reply");
    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        let item = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("an event within 5 s")
            .expect("the stream stays open")
            .expect("an item");
        if let Some(pb::watch_events_response::Item::Event(event)) = item.item {
            kinds.push(event.payload.expect("payload"));
        }
    }
    assert!(matches!(
        kinds[0],
        pb::event::Payload::ConversationStarted(_)
    ));
    assert!(matches!(kinds[1], pb::event::Payload::MessagePosted(_)));
    let thread = browser
        .list_messages(list_messages_request(&id, ""))
        .await
        .expect("list over grpc-web")
        .into_inner()
        .messages;
    assert_eq!(thread.len(), 1);
    // Refusals arrive with their code and reason over grpc-web too.
    let status = browser
        .close_conversation(close_request(&id, dana()))
        .await
        .expect_err("a visitor cannot close");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(reason(&status), "ROLE_NOT_PERMITTED");
}

#[tokio::test]
async fn grpc_web_over_http2_answers_as_over_http1() {
    let app = TestApp::spawn().await;
    let token = session_token(&app, "v-ada").await;
    let mut browser = grpc_web_over(&app, &token, true);
    let started = browser
        .start_conversation(pb::StartConversationRequest::default())
        .await
        .expect("start over grpc-web on HTTP/2")
        .into_inner()
        .conversation
        .expect("conversation");
    assert_eq!(started.visitor_id, "v-ada");
    let mut stream = browser
        .watch_events(pb::WatchEventsRequest {
            conversation_id: started.conversation_id,
            ..Default::default()
        })
        .await
        .expect("watch over grpc-web on HTTP/2")
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("an item within 5 s")
        .expect("open")
        .expect("an item");
    assert!(matches!(
        first.item,
        Some(pb::watch_events_response::Item::Event(_))
    ));
}

#[tokio::test]
async fn cors_preflights_admit_only_the_origins_the_operator_named() {
    let app = TestApp::spawn_with(admitting(&[
        "https://shop.example",
        "http://localhost:8080",
    ]))
    .await;
    let (status, headers, _) = http1(&app, preflight(&app, "https://shop.example")).await;
    assert!(status.is_success(), "{status}");
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://shop.example"
    );
    let allowed = headers["access-control-allow-headers"]
        .to_str()
        .expect("ascii")
        .to_ascii_lowercase();
    for header in [
        "authorization",
        "content-type",
        "x-grpc-web",
        "x-user-agent",
    ] {
        assert!(allowed.contains(header), "{header} in {allowed}");
    }
    let (_, headers, _) = http1(&app, preflight(&app, "http://localhost:8080")).await;
    assert_eq!(
        headers["access-control-allow-origin"],
        "http://localhost:8080"
    );

    for stranger in ["https://evil.example", "https://shop.example.evil", "null"] {
        let (_, headers, _) = http1(&app, preflight(&app, stranger)).await;
        assert!(
            !headers.contains_key("access-control-allow-origin"),
            "{stranger} is not admitted"
        );
    }
}

#[tokio::test]
async fn no_origin_is_admitted_unless_named_yet_plain_grpc_is_unaffected() {
    let app = TestApp::spawn().await;
    let (_, headers, _) = http1(&app, preflight(&app, "http://localhost:8080")).await;
    assert!(!headers.contains_key("access-control-allow-origin"));
    // The same server over plain gRPC (HTTP/2), as every other test uses it.
    let mut agent = app.agent().await;
    start(&mut agent, "v-1").await;
}

#[tokio::test]
async fn the_web_root_serves_its_files_to_get_and_nothing_outside_it() {
    let dir = tempfile::tempdir().expect("dir");
    let root = dir.path().join("site");
    std::fs::create_dir(&root).expect("root");
    std::fs::write(root.join("index.html"), "<h1>widget</h1>").expect("index");
    std::fs::write(root.join("app.js"), "console.log(1)").expect("js");
    std::fs::write(dir.path().join("secret.txt"), "not for you").expect("secret");
    let app = TestApp::spawn_with(conversations::config::Settings {
        web_root: Some(root),
        ..default_settings()
    })
    .await;
    let get = |path: &str| {
        http::Request::builder()
            .method(http::Method::GET)
            .uri(format!("http://{}{path}", app.addr))
    };
    let (status, headers, body) = http1(&app, get("/")).await;
    assert_eq!(status, http::StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(&body[..], b"<h1>widget</h1>");
    let (status, headers, _) = http1(&app, get("/app.js")).await;
    assert_eq!(status, http::StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .contains("javascript")
    );
    for outside in ["/../secret.txt", "/%2e%2e/secret.txt", "/missing.html"] {
        let (status, _, body) = http1(&app, get(outside)).await;
        assert_eq!(status, http::StatusCode::NOT_FOUND, "{outside}");
        assert!(!body.starts_with(b"not for you"));
    }
    // gRPC on the same port still answers.
    let mut agent = app.agent().await;
    start(&mut agent, "v-1").await;
}
