//! Assembles the server: binds the listener first (so a test on port 0 knows
//! its address before serving), opens the store (on a SQLite file, taking
//! its server lock), and serves the conversation service with reflection, health,
//! message size limits and graceful shutdown.

use std::{future::Future, net::SocketAddr, path::Path, time::Duration};

use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tonic::{
    server::NamedService,
    transport::{Certificate, Identity, Server, ServerTlsConfig, server::TcpIncoming},
};
use tonic_health::pb::health_server::HealthServer;

use crate::{
    app::App,
    config::{ListenAddress, Settings, TlsFiles},
    connections::Guarded,
    grpc::{
        ConversationsApi, FlowsApi, HealthApi, HealthState, WorkspacesApi,
        refusals::ClearRefusalsLayer, rpc_log::RpcLogLayer, web::WebRootLayer,
    },
    pb::{
        self, conversation_service_server::ConversationServiceServer,
        flow_service_server::FlowServiceServer, workspace_service_server::WorkspaceServiceServer,
    },
    store::{Store, StoreError},
};

/// Largest request message the server decodes.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Largest response message the server encodes.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// Largest header block (metadata) of a request; gRPC's own default is 8
/// KiB, and a key is under 100 bytes.
pub const MAX_HEADER_BYTES: u32 = 16 * 1024;
/// How long a connection asked to go away (max connection age) may finish
/// its calls.
const CONNECTION_AGE_GRACE: Duration = Duration::from_secs(60);
/// How often forgotten request ids are purged.
const PURGE_EVERY: Duration = Duration::from_secs(600);

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The settings contradict each other.
    #[error("{0}")]
    Settings(String),

    /// The database could not be opened or migrated.
    #[error("could not open the database: {0}")]
    Store(#[from] StoreError),
    /// The address could not be bound (or its host name resolved).
    #[error("could not listen on {addr}: {source}")]
    Bind {
        /// The address, as given.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// A TLS file could not be read.
    #[error("could not read the TLS {what} {path}: {source}")]
    TlsFile {
        /// Which file: certificate, key or client CA.
        what: &'static str,
        /// The path given.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS files do not make a usable configuration.
    #[error("could not use the TLS {files}: {why}")]
    Tls {
        /// The files at fault.
        files: String,
        /// What the TLS library said.
        why: String,
    },
    /// Reflection could not load the descriptors.
    #[error("could not build gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// Another metrics recorder was installed in this process first.
    #[error("could not install the metrics recorder: another one is installed")]
    Metrics,
    /// The transport failed.
    #[error("server error: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// A bound, not yet serving, server.
pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    app: App,
    max_connection_age: Option<Duration>,
    tls: Option<ServerTlsConfig>,
    settings: Settings,
    metrics: Option<Metrics>,
}

/// The metrics endpoint, bound and not yet serving.
struct Metrics {
    listener: TcpListener,
    address: SocketAddr,
    handle: metrics_exporter_prometheus::PrometheusHandle,
}

/// How often the database gauges (pools, file sizes) are sampled.
const OBSERVE_EVERY: Duration = Duration::from_secs(1);

/// How long a client may take over its TLS handshake: a socket that never
/// says hello is closed rather than held.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads the TLS files and checks that they make a server configuration,
/// so that a bad certificate, key or client CA fails the start, naming its
/// file.
fn tls_config(files: &TlsFiles) -> Result<ServerTlsConfig, StartupError> {
    let read = |what, path: &Path| {
        std::fs::read(path).map_err(|source| StartupError::TlsFile {
            what,
            path: path.display().to_string(),
            source,
        })
    };
    let unusable = |files: String, error: tonic::transport::Error| StartupError::Tls {
        files,
        why: std::error::Error::source(&error)
            .map_or_else(|| error.to_string(), ToString::to_string),
    };
    let identity = Identity::from_pem(read("certificate", &files.cert)?, read("key", &files.key)?);
    let config = ServerTlsConfig::new()
        .identity(identity)
        .timeout(TLS_HANDSHAKE_TIMEOUT);
    let pair = || {
        format!(
            "certificate {} and key {}",
            files.cert.display(),
            files.key.display()
        )
    };
    Server::builder()
        .tls_config(config.clone())
        .map_err(|error| unusable(pair(), error))?;
    let Some(ca) = &files.client_ca else {
        return Ok(config);
    };
    let config = config.client_ca_root(Certificate::from_pem(read("client CA", ca)?));
    Server::builder()
        .tls_config(config.clone())
        .map_err(|error| unusable(format!("client CA {}", ca.display()), error))?;
    Ok(config)
}

/// Binds `address`: its host resolved, each address in the resolver's order
/// until one binds (`localhost` may give ::1 and 127.0.0.1).
async fn bind(address: &ListenAddress) -> Result<TcpListener, StartupError> {
    let failed = |source| StartupError::Bind {
        addr: address.to_string(),
        source,
    };
    let candidates = address.resolve().await.map_err(failed)?;
    let mut last = None;
    for candidate in candidates {
        match TcpListener::bind(candidate).await {
            Ok(listener) => return Ok(listener),
            Err(error) => last = Some(error),
        }
    }
    Err(failed(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the host name resolves to no address",
        )
    })))
}

impl Application {
    /// Binds the listener, then opens the store: a taken port fails before
    /// anything is written to disk.
    pub async fn build(settings: &Settings) -> Result<Self, StartupError> {
        settings
            .connections
            .check(settings.feed.heartbeat)
            .map_err(StartupError::Settings)?;
        let listener = bind(&settings.listen).await?;
        let local_addr = listener.local_addr().map_err(|source| StartupError::Bind {
            addr: settings.listen.to_string(),
            source,
        })?;
        let metrics = match &settings.metrics_listen {
            Some(address) => {
                let listener = bind(address).await?;
                let bound = listener.local_addr().map_err(|source| StartupError::Bind {
                    addr: address.to_string(),
                    source,
                })?;
                let handle = crate::metrics::install().ok_or(StartupError::Metrics)?;
                Some(Metrics {
                    listener,
                    address: bound,
                    handle,
                })
            }
            None => None,
        };
        let tls = settings.tls.as_ref().map(tls_config).transpose()?;
        let store = Store::open_to_serve(&settings.database).await?;
        let app = App::start(store, settings.feed, settings.limits).await?;
        app.start_timers(settings.timers);
        Ok(Self {
            listener,
            local_addr,
            app,
            max_connection_age: settings.max_connection_age,
            tls,
            settings: settings.clone(),
            metrics,
        })
    }

    /// The bound address (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where metrics are served, when they are.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|m| m.address)
    }

    /// The use cases, e.g. for bootstrapping keys before serving.
    pub fn app(&self) -> &App {
        &self.app
    }

    /// Serves until `shutdown` completes, then stops taking calls, lets the
    /// calls in flight finish, and closes the database.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartupError> {
        let health = HealthState::serving();
        let health_service = HealthServer::new(HealthApi::new(
            health.clone(),
            [
                <ConversationServiceServer<ConversationsApi> as NamedService>::NAME,
                <FlowServiceServer<FlowsApi> as NamedService>::NAME,
                <WorkspaceServiceServer<WorkspacesApi> as NamedService>::NAME,
            ],
        ));

        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(pb::ERROR_DETAILS_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection().build_v1()?;
        // grpcurl 1.8 and many other tools still ask v1alpha.
        let reflection_v1alpha = reflection().build_v1alpha()?;

        let conversations = ConversationServiceServer::new(ConversationsApi::new(self.app.clone()))
            .max_decoding_message_size(MAX_REQUEST_BYTES)
            .max_encoding_message_size(MAX_RESPONSE_BYTES);

        let flows = FlowServiceServer::new(FlowsApi::new(self.app.clone()))
            .max_decoding_message_size(MAX_REQUEST_BYTES)
            .max_encoding_message_size(MAX_RESPONSE_BYTES);
        let workspaces = WorkspaceServiceServer::new(WorkspacesApi::new(self.app.clone()))
            .max_decoding_message_size(MAX_REQUEST_BYTES)
            .max_encoding_message_size(MAX_RESPONSE_BYTES);

        let purger = tokio::spawn(purge_expired(self.app.clone()));
        let prober = tokio::spawn(probe_database(self.app.store().clone(), health.clone()));
        let (metrics_stop, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
        let metrics_address = self.metrics.as_ref().map(|m| m.address);
        let metrics = self.metrics.map(|m| {
            let store = self.app.store().clone();
            let handle = m.handle.clone();
            let sampler = tokio::spawn(async move {
                let mut every = tokio::time::interval(OBSERVE_EVERY);
                loop {
                    every.tick().await;
                    store.observe();
                    // Folds the histograms' recorded samples into their
                    // buckets; without it they pile up until a scrape,
                    // without bound if no one ever scrapes.
                    handle.run_upkeep();
                }
            });
            let served = tokio::spawn(serve_metrics(
                m.listener,
                m.handle,
                self.settings.connections,
                async move {
                    let _ = metrics_stopped.await;
                },
            ));
            (sampler, served)
        });

        let store = self.app.store().clone();
        let app = self.app.clone();
        let shutdown_grace = self.settings.shutdown_grace;
        let in_force = store
            .in_force()
            .await
            .unwrap_or_else(|error| format!("(could not be read: {error})"));
        let settings = &self.settings;
        tracing::info!(
            address = %self.local_addr,
            tls = self.tls.is_some(),
            database = %settings.database,
            store = %in_force,
            max_streams = settings.limits.max_streams,
            max_streams_per_key = settings.limits.max_streams_per_key,
            workspace_calls_per_second = settings.limits.workspace_calls_per_second.map_or(0, |n| n.get()),
            feed_window_events = settings.feed.window,
            heartbeat = ?settings.feed.heartbeat,
            slow_subscriber_after = ?settings.feed.slow_after,
            timer_lease = ?settings.timers.lease,
            max_connection_age = ?self.max_connection_age,
            shutdown_grace = ?settings.shutdown_grace,
            max_request_bytes = MAX_REQUEST_BYTES,
            max_response_bytes = MAX_RESPONSE_BYTES,
            metrics = ?metrics_address.map(|a| format!("http://{a}/metrics")),
            cors_origins = ?settings.cors_origins.iter().map(|o| o.as_str()).collect::<Vec<_>>(),
            web_root = ?settings.web_root,
            "serving conversations.v1 (ConversationService, FlowService, WorkspaceService)"
        );
        let address = self.local_addr;
        let database = settings.database.to_string();
        let (stopping, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        // The server's own tcp_nodelay setting does not apply to an incoming
        // stream we hand it; without TCP_NODELAY every response's trailers
        // wait ~40 ms for the client's delayed ACK.
        let timeouts = settings.connections;
        let incoming = TcpIncoming::from(self.listener)
            .with_nodelay(Some(true))
            .with_keepalive(Some(Duration::from_secs(60)))
            .map(move |accepted| accepted.map(|socket| Guarded::new(socket, timeouts)));
        let mut server = Server::builder()
            .http2_keepalive_interval(Some(timeouts.ping_every))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .http2_max_header_list_size(MAX_HEADER_BYTES);
        if let Some(tls) = self.tls {
            server = server.tls_config(tls)?;
        }
        if let Some(age) = self.max_connection_age {
            server = server
                .max_connection_age(age)
                .max_connection_age_grace(CONNECTION_AGE_GRACE);
        }
        let serve = server
            // grpc-web over HTTP/1.1 too (browsers, and the static files).
            .accept_http1(true)
            .layer(WebRootLayer::new(settings.web_root.as_deref()))
            .layer(crate::grpc::web::cors(&settings.cors_origins))
            .layer(tonic_web::GrpcWebLayer::new())
            // Outside the services, so that the line shows the answer as the
            // client got it.
            .layer(RpcLogLayer)
            .layer(ClearRefusalsLayer)
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(conversations)
            .add_service(flows)
            .add_service(workspaces)
            .serve_with_incoming_shutdown(incoming, async move {
                shutdown.await;
                // First of all, so that load balancers stop sending calls.
                health.stop_serving();
                tracing::info!(
                    grace = ?shutdown_grace,
                    "shutting down: health is NOT_SERVING; finishing calls in flight, ending event streams"
                );
                app.begin_shutdown();
                let _ = stopping.send(());
            });
        let grace_over = async {
            if stopping_rx.await.is_ok() {
                tokio::time::sleep(shutdown_grace).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        let result = tokio::select! {
            result = serve => result,
            () = grace_over => {
                tracing::warn!(grace = ?shutdown_grace, "calls still open after the grace period; closing them");
                Ok(())
            }
        };
        purger.abort();
        prober.abort();
        let _ = metrics_stop.send(());
        if let Some((sampler, served)) = metrics {
            sampler.abort();
            let _ = served.await;
        }
        // No call is in flight any more: let the writer finish its queue.
        self.app.stop().await;
        store.close().await;
        tracing::info!(%address, %database, "stopped: every write acknowledged is on disk, the database is closed");
        Ok(result?)
    }
}

/// Every PURGE_EVERY, forgets request ids past their retention and the
/// revocations of visitor sessions that have expired.
async fn purge_expired(app: App) {
    let mut every = tokio::time::interval(PURGE_EVERY);
    loop {
        every.tick().await;
        match app.purge_request_ids().await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "forgot request ids older than 24 hours"),
            Err(error) => tracing::warn!(%error, "could not purge old request ids"),
        }
        match app.purge_revoked_sessions().await {
            Ok(0) => {}
            Ok(purged) => {
                tracing::info!(purged, "forgot revoked visitor sessions that have expired")
            }
            Err(error) => tracing::warn!(%error, "could not purge expired session revocations"),
        }
    }
}

/// How often the health probe asks the database, how long it waits for an
/// answer, and after how many failures in a row health turns NOT_SERVING
/// (one slow answer under load is no outage).
const PROBE_EVERY: Duration = Duration::from_secs(1);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
const PROBE_FAILURES: u32 = 3;

/// Keeps health NOT_SERVING while the database does not answer, so that a
/// load balancer sends calls to a replica that can serve them; SERVING
/// again at the first answer.
async fn probe_database(store: Store, health: HealthState) {
    let mut every = tokio::time::interval(PROBE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = 0u32;
    loop {
        every.tick().await;
        let answer = match tokio::time::timeout(PROBE_TIMEOUT, store.ping()).await {
            Ok(answer) => answer.map_err(|error| error.to_string()),
            Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
        };
        let was_reachable = failures < PROBE_FAILURES;
        failures = match &answer {
            Ok(()) => 0,
            Err(_) => failures.saturating_add(1),
        };
        let reachable = failures < PROBE_FAILURES;
        match (&answer, was_reachable, reachable) {
            (Err(error), true, false) => tracing::warn!(
                %error,
                failures,
                "the database does not answer: health is NOT_SERVING until it does"
            ),
            (_, false, true) => tracing::info!("the database answers again: health is SERVING"),
            _ => {}
        }
        health.set_database_reachable(reachable);
        ::metrics::gauge!(crate::metrics::DB_REACHABLE).set(f64::from(u8::from(reachable)));
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// Serves `GET /metrics` (Prometheus text) on `listener` until `shutdown`
/// completes; any other path is 404. Connections that keep it waiting are
/// closed as the main port's are.
async fn serve_metrics(
    listener: TcpListener,
    handle: metrics_exporter_prometheus::PrometheusHandle,
    timeouts: crate::connections::ConnectionTimeouts,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use http_body_util::Full;
    use hyper::{Response, StatusCode, body::Bytes, server::conn::http1, service::service_fn};
    use hyper_util::rt::TokioIo;

    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "metrics: could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let handle = handle.clone();
        let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let handle = handle.clone();
            async move {
                let response = if request.uri().path() == "/metrics" {
                    handle.run_upkeep();
                    Response::builder()
                        .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
                        .body(Full::new(Bytes::from(handle.render())))
                } else {
                    Response::builder()
                        .status(StatusCode::NOT_FOUND)
                        .body(Full::new(Bytes::from_static(b"metrics are at /metrics\n")))
                };
                response.map_err(|e| std::io::Error::other(e.to_string()))
            }
        });
        tokio::spawn(async move {
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(Guarded::new(stream, timeouts)), service)
                .await
            {
                tracing::debug!(%error, "metrics: a connection failed");
            }
        });
    }
}
