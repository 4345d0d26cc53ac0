//! The WorkspaceService handlers: a workspace's settings, for admin keys.

use tonic::{Request, Response, Status};

use super::convert::{Fields, spec_duration, to_duration};
use crate::{
    app::{App, Caller, settings::SettingsRequest},
    domain::timers::WorkspaceSettings,
    pb::{self, workspace_service_server::WorkspaceService},
};

/// Serves `conversations.v1.WorkspaceService`.
#[derive(Debug, Clone)]
pub struct WorkspacesApi {
    app: App,
}

impl WorkspacesApi {
    /// Serves the application's workspace settings over gRPC.
    pub fn new(app: App) -> Self {
        Self { app }
    }

    /// The authenticated caller, with an admin key.
    async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        super::admin_caller(&self.app, request).await
    }
}

fn to_settings(settings: &WorkspaceSettings) -> pb::WorkspaceSettings {
    pb::WorkspaceSettings {
        auto_close: settings.auto_close.as_ref().map(|auto| pb::AutoClose {
            idle_duration: Some(to_duration(auto.after_micros.saturating_mul(1000))),
            message: auto
                .message
                .as_ref()
                .map(|m| m.as_str().to_owned())
                .unwrap_or_default(),
        }),
    }
}

/// The request's settings, with the idle time checked as a protobuf
/// Duration and kept to the microsecond.
fn settings_request(
    f: &mut Fields,
    settings: Option<&pb::WorkspaceSettings>,
) -> Option<SettingsRequest> {
    let Some(settings) = settings else {
        f.violation("settings", "is required");
        return None;
    };
    let Some(auto) = &settings.auto_close else {
        return Some(SettingsRequest { auto_close: None });
    };
    let field = "settings.auto_close.idle_duration";
    let nanos = spec_duration(
        f,
        field,
        auto.idle_duration.as_ref(),
        "must be at most 366 days",
    )?;
    if nanos % 1000 != 0 {
        f.violation(field, "must be whole microseconds");
        return None;
    }
    Some(SettingsRequest {
        auto_close: Some((nanos / 1000, auto.message.clone())),
    })
}

#[tonic::async_trait]
impl WorkspaceService for WorkspacesApi {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn get_workspace_settings(
        &self,
        request: Request<pb::GetWorkspaceSettingsRequest>,
    ) -> Result<Response<pb::GetWorkspaceSettingsResponse>, Status> {
        let caller = self.caller(&request).await?;
        let settings = self.app.workspace_settings(&caller).await?;
        Ok(Response::new(pb::GetWorkspaceSettingsResponse {
            settings: Some(to_settings(&settings)),
        }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn update_workspace_settings(
        &self,
        request: Request<pb::UpdateWorkspaceSettingsRequest>,
    ) -> Result<Response<pb::UpdateWorkspaceSettingsResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let mut f = Fields::default();
        let parsed = settings_request(&mut f, req.settings.as_ref());
        let parsed = f.done(parsed)?;
        let settings = self.app.update_workspace_settings(&caller, &parsed).await?;
        Ok(Response::new(pb::UpdateWorkspaceSettingsResponse {
            settings: Some(to_settings(&settings)),
        }))
    }
}
