//! TLS (issue 8): with `--tls-cert/--tls-key` the server speaks only TLS; with
//! `--tls-client-ca` only clients holding a certificate that CA signed get
//! in. Certificates are made here: a CA, a server certificate for
//! localhost and 127.0.0.1, client certificates from that CA and another.

use std::path::{Path, PathBuf};

use conversations::{
    config::{Settings, TlsFiles},
    pb,
    startup::{Application, StartupError},
};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::helpers::{TestApp, start};

/// A CA that signs certificates.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        Ca {
            cert: params.self_signed(&key).expect("CA certificate"),
            key,
        }
    }

    /// A certificate for `names`, as (certificate PEM, key PEM).
    fn issue(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let cert = CertificateParams::new(names)
            .expect("params")
            .signed_by(&key, &self.cert, &self.key)
            .expect("certificate");
        (cert.pem(), key.serialize_pem())
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }
}

fn write(dir: &Path, name: &str, pem: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, pem).expect("write PEM");
    path
}

/// Server TLS files signed by `ca`, and the client CA if `client_ca`.
fn tls_files(dir: &Path, ca: &Ca, client_ca: Option<&Ca>) -> TlsFiles {
    let (cert, key) = ca.issue(&["localhost", "127.0.0.1"]);
    TlsFiles {
        cert: write(dir, "server.pem", &cert),
        key: write(dir, "server.key", &key),
        client_ca: client_ca.map(|ca| write(dir, "client-ca.pem", &ca.pem())),
    }
}

async fn tls_app(files: TlsFiles) -> TestApp {
    TestApp::spawn_with(Settings {
        tls: Some(files),
        ..Settings::new(
            "127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .expect("address"),
            PathBuf::new(),
        )
    })
    .await
}

/// A channel to `app` over TLS that trusts `ca`, presenting `identity`.
async fn tls_channel(
    app: &TestApp,
    ca: &Ca,
    identity: Option<(String, String)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca.pem()))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Channel::from_shared(format!("https://127.0.0.1:{}", app.addr.port()))
        .expect("uri")
        .tls_config(tls)?
        .connect()
        .await
}

/// Whether a call with the agent key over `channel` gets through.
async fn call_works(app: &TestApp, channel: Result<Channel, tonic::transport::Error>) -> bool {
    let Ok(channel) = channel else { return false };
    app.agent_over(channel)
        .list_conversations(pb::ListConversationsRequest::default())
        .await
        .is_ok()
}

#[tokio::test]
async fn a_tls_server_answers_clients_that_trust_its_certificate_and_refuses_plaintext() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = Ca::new("test CA");
    let app = tls_app(tls_files(dir.path(), &ca, None)).await;

    let channel = tls_channel(&app, &ca, None).await.expect("TLS connects");
    let mut agent = app.agent_over(channel);
    let started = start(&mut agent, "v-1").await;
    assert_eq!(started.status(), pb::ConversationStatus::Open);

    // Plaintext on the TLS listener: refused.
    let plaintext = Channel::from_shared(format!("http://{}", app.addr))
        .expect("uri")
        .connect()
        .await;
    assert!(
        !call_works(&app, plaintext).await,
        "a plaintext call got through"
    );
    // A client that does not trust the server's CA: refused.
    let stranger = Ca::new("another CA");
    assert!(!call_works(&app, tls_channel(&app, &stranger, None).await).await);
    app.stop().await;
}

#[tokio::test]
async fn with_a_client_ca_only_clients_holding_a_certificate_it_signed_get_in() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = Ca::new("server CA");
    let clients = Ca::new("client CA");
    let app = tls_app(tls_files(dir.path(), &ca, Some(&clients))).await;

    let signed = clients.issue(&["inbox-backend"]);
    assert!(call_works(&app, tls_channel(&app, &ca, Some(signed)).await).await);
    assert!(
        !call_works(&app, tls_channel(&app, &ca, None).await).await,
        "no client certificate"
    );
    let forged = Ca::new("someone else").issue(&["inbox-backend"]);
    assert!(
        !call_works(&app, tls_channel(&app, &ca, Some(forged)).await).await,
        "a certificate from another CA"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_missing_or_unusable_tls_file_fails_the_start_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = Ca::new("test CA");
    let good = tls_files(dir.path(), &ca, None);
    let start_with = |tls: TlsFiles| {
        let database = dir.path().join("tls.db");
        async move {
            match Application::build(&Settings {
                tls: Some(tls),
                ..Settings::new(
                    "127.0.0.1:0"
                        .parse::<std::net::SocketAddr>()
                        .expect("address"),
                    database,
                )
            })
            .await
            {
                Ok(_) => panic!("the server started"),
                Err(error) => error,
            }
        }
    };

    let missing = dir.path().join("nowhere.pem");
    let error = start_with(TlsFiles {
        cert: missing.clone(),
        ..good.clone()
    })
    .await;
    assert!(matches!(error, StartupError::TlsFile { .. }), "{error:?}");
    assert!(
        error.to_string().contains(&missing.display().to_string()),
        "{error}"
    );

    let garbage = write(dir.path(), "garbage.key", "not a key");
    let error = start_with(TlsFiles {
        key: garbage.clone(),
        ..good.clone()
    })
    .await;
    assert!(matches!(error, StartupError::Tls { .. }), "{error:?}");
    assert!(
        error.to_string().contains(&garbage.display().to_string()),
        "{error}"
    );

    let bad_ca = write(dir.path(), "garbage-ca.pem", "not a certificate");
    let error = start_with(TlsFiles {
        client_ca: Some(bad_ca.clone()),
        ..good
    })
    .await;
    assert!(matches!(error, StartupError::Tls { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .contains(&format!("client CA {}", bad_ca.display())),
        "the error names the CA file: {error}"
    );
    assert!(!dir.path().join("tls.db").exists(), "nothing was created");
}
