//! Workspace settings (admin keys and the CLI): auto-close of idle
//! conversations.

use super::{App, AppError, Caller, FieldViolation};
use crate::{
    domain::{
        WorkspaceId,
        timers::{AutoClose, WorkspaceSettings},
        values::MessageText,
    },
    store::Store,
};

/// Settings as a request gives them, before they are checked.
#[derive(Debug, Clone, Default)]
pub struct SettingsRequest {
    /// Auto-close: the idle time in microseconds and the visitor's text
    /// (empty for none); `None` turns it off.
    pub auto_close: Option<(i64, String)>,
}

/// Checks `request` into settings, naming every bad field by its request
/// path.
pub fn parse(request: &SettingsRequest) -> Result<WorkspaceSettings, AppError> {
    let Some((after, text)) = &request.auto_close else {
        return Ok(WorkspaceSettings::default());
    };
    let mut violations = Vec::new();
    let message = if text.is_empty() {
        None
    } else {
        match MessageText::parse(text) {
            Ok(text) => Some(text),
            Err(description) => {
                violations.push(FieldViolation {
                    field: "settings.auto_close.message".into(),
                    description,
                });
                None
            }
        }
    };
    match AutoClose::new(*after, message) {
        Ok(auto) if violations.is_empty() => Ok(WorkspaceSettings {
            auto_close: Some(auto),
        }),
        Ok(_) => Err(AppError::InvalidArgument(violations)),
        Err(description) => {
            violations.insert(
                0,
                FieldViolation {
                    field: "settings.auto_close.idle_duration".into(),
                    description,
                },
            );
            Err(AppError::InvalidArgument(violations))
        }
    }
}

/// Reads a workspace's settings, and writes them.
pub async fn get(store: &Store, workspace_id: WorkspaceId) -> Result<WorkspaceSettings, AppError> {
    // The caller's workspace exists (its key does); a missing row would be
    // a fault, reported as such.
    store.settings(workspace_id).await?.ok_or_else(|| {
        AppError::Store(crate::store::StoreError::Corrupt(format!(
            "workspace {} has no row",
            workspace_id.0
        )))
    })
}

/// Replaces a workspace's settings; its conversations' timers follow them
/// at once.
pub async fn update(
    store: &Store,
    workspace_id: WorkspaceId,
    next: &WorkspaceSettings,
) -> Result<(), AppError> {
    Ok(store.update_settings(workspace_id, next).await?)
}

impl App {
    /// The caller's workspace settings. Admin keys only.
    pub async fn workspace_settings(&self, caller: &Caller) -> Result<WorkspaceSettings, AppError> {
        caller.require_admin()?;
        get(&self.store, caller.workspace_id).await
    }

    /// Replaces the caller's workspace settings. Admin keys only.
    pub async fn update_workspace_settings(
        &self,
        caller: &Caller,
        request: &SettingsRequest,
    ) -> Result<WorkspaceSettings, AppError> {
        caller.require_admin()?;
        let next = parse(request)?;
        update(&self.store, caller.workspace_id, &next).await?;
        Ok(next)
    }
}
