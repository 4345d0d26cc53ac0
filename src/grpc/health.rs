//! `grpc.health.v1.Health`, telling the truth through shutdown.
//!
//! Every service of the server shares the process's state: SERVING until
//! shutdown starts, then NOT_SERVING at once, for `Check` and for every
//! `Watch`. A `Watch` stream then sends NOT_SERVING and ends, so a load
//! balancer's watch never holds a draining server open (tonic-health's own
//! streams end only when the server drops them, after the grace period).
//! Unknown service names are NOT_FOUND for `Check` and SERVICE_UNKNOWN for
//! `Watch`, as the protocol says.

use std::{collections::HashSet, pin::Pin, sync::Arc};

use tokio::sync::{mpsc, watch};
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};
use tonic_health::pb::{
    HealthCheckRequest, HealthCheckResponse, health_check_response::ServingStatus,
    health_server::Health,
};

/// Flips the health of the whole server; cheap to clone.
#[derive(Debug, Clone)]
pub struct HealthState {
    serving: Arc<watch::Sender<bool>>,
}

impl HealthState {
    /// A server that is SERVING.
    pub fn serving() -> Self {
        Self {
            serving: Arc::new(watch::Sender::new(true)),
        }
    }

    /// NOT_SERVING from now on; open watches hear it and end.
    pub fn stop_serving(&self) {
        self.serving.send_replace(false);
    }
}

/// The health service over `HealthState`, knowing these service names
/// (the empty name is the server as a whole).
#[derive(Debug)]
pub struct HealthApi {
    state: HealthState,
    services: HashSet<String>,
}

impl HealthApi {
    /// Answers for `services` (and for the server, named "").
    pub fn new(state: HealthState, services: impl IntoIterator<Item = &'static str>) -> Self {
        let mut services: HashSet<String> = services.into_iter().map(str::to_owned).collect();
        services.insert(String::new());
        Self { state, services }
    }

    fn knows(&self, service: &str) -> bool {
        self.services.contains(service)
    }
}

/// What a service is answered, by whether it is known and the server serves.
fn status_of(known: bool, serving: bool) -> ServingStatus {
    match (known, serving) {
        (false, _) => ServingStatus::ServiceUnknown,
        (true, true) => ServingStatus::Serving,
        (true, false) => ServingStatus::NotServing,
    }
}

fn response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status as i32,
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for HealthApi {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let serving = *self.state.serving.borrow();
        match status_of(self.knows(&request.get_ref().service), serving) {
            ServingStatus::ServiceUnknown => Err(Status::not_found("service not registered")),
            status => Ok(Response::new(response(status))),
        }
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let known = self.knows(&request.get_ref().service);
        let mut serving = self.state.serving.subscribe();
        let (send, receive) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut last = None;
            loop {
                let now = *serving.borrow_and_update();
                let status = status_of(known, now);
                if last != Some(status) {
                    last = Some(status);
                    if send.send(Ok(response(status))).await.is_err() {
                        return;
                    }
                }
                // Shutdown: the watcher has heard it; end the stream.
                if !now {
                    return;
                }
                tokio::select! {
                    changed = serving.changed() => if changed.is_err() { return },
                    () = send.closed() => return,
                }
            }
        });
        let stream: WatchStream = Box::pin(ReceiverStream::new(receive));
        Ok(Response::new(stream))
    }
}
