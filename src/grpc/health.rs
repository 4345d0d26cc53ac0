//! `grpc.health.v1.Health`, telling the truth through shutdown and through
//! database outages.
//!
//! Every service of the server shares the process's state: SERVING while
//! the database answers and shutdown has not started. When the start-up's
//! probe finds the database unreachable, NOT_SERVING until it answers
//! again; open `Watch` streams hear both changes. When shutdown starts,
//! NOT_SERVING at once and for good: a `Watch` stream then sends
//! NOT_SERVING and ends, so a load balancer's watch never holds a draining
//! server open (tonic-health's own streams end only when the server drops
//! them, after the grace period). The name [`LIVENESS`] is SERVING
//! whenever the process answers. Unknown service names are NOT_FOUND for
//! `Check` and SERVICE_UNKNOWN for `Watch`, as the protocol says.

use std::{collections::HashSet, pin::Pin, sync::Arc};

use tokio::sync::{mpsc, watch};
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};
use tonic_health::pb::{
    HealthCheckRequest, HealthCheckResponse, health_check_response::ServingStatus,
    health_server::Health,
};

/// What the server's health is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Condition {
    stopping: bool,
    database_reachable: bool,
}

impl Condition {
    fn serving(self) -> bool {
        !self.stopping && self.database_reachable
    }
}

/// Flips the health of the whole server; cheap to clone.
#[derive(Debug, Clone)]
pub struct HealthState {
    condition: Arc<watch::Sender<Condition>>,
}

impl HealthState {
    /// A server that is SERVING.
    pub fn serving() -> Self {
        Self {
            condition: Arc::new(watch::Sender::new(Condition {
                stopping: false,
                database_reachable: true,
            })),
        }
    }

    /// NOT_SERVING from now on; open watches hear it and end.
    pub fn stop_serving(&self) {
        self.condition.send_modify(|c| c.stopping = true);
    }

    /// Whether the database answers; NOT_SERVING while it does not.
    pub fn set_database_reachable(&self, reachable: bool) {
        self.condition.send_if_modified(|c| {
            let changed = c.database_reachable != reachable;
            c.database_reachable = reachable;
            changed
        });
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

    fn asked(&self, service: &str) -> Asked {
        if service == LIVENESS {
            Asked::Liveness
        } else if self.services.contains(service) {
            Asked::Readiness
        } else {
            Asked::Unknown
        }
    }
}

/// The name to probe for liveness: SERVING whenever the process answers,
/// whatever the database does, so that an orchestrator never restarts
/// servers for a database outage (readiness, the server's own name "" and
/// the services' names, takes them out of rotation instead).
pub const LIVENESS: &str = "liveness";

/// What a health request asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    Unknown,
    Readiness,
    Liveness,
}

/// What is answered about `asked` in `condition`.
fn status_of(asked: Asked, condition: Condition) -> ServingStatus {
    match asked {
        Asked::Unknown => ServingStatus::ServiceUnknown,
        Asked::Liveness => ServingStatus::Serving,
        Asked::Readiness if condition.serving() => ServingStatus::Serving,
        Asked::Readiness => ServingStatus::NotServing,
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
        let condition = *self.state.condition.borrow();
        match status_of(self.asked(&request.get_ref().service), condition) {
            ServingStatus::ServiceUnknown => Err(Status::not_found("service not registered")),
            status => Ok(Response::new(response(status))),
        }
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let asked = self.asked(&request.get_ref().service);
        let mut condition = self.state.condition.subscribe();
        let (send, receive) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut last = None;
            loop {
                let now = *condition.borrow_and_update();
                let status = status_of(asked, now);
                if last != Some(status) {
                    last = Some(status);
                    if send.send(Ok(response(status))).await.is_err() {
                        return;
                    }
                }
                // Shutdown: the watcher has heard it; end the stream.
                if now.stopping {
                    return;
                }
                tokio::select! {
                    changed = condition.changed() => if changed.is_err() { return },
                    () = send.closed() => return,
                }
            }
        });
        let stream: WatchStream = Box::pin(ReceiverStream::new(receive));
        Ok(Response::new(stream))
    }
}
