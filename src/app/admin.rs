//! Administration for the command line: workspaces and keys.

use super::{
    AppError, Caller, now,
    settings::{self, SettingsRequest},
};
use crate::{
    domain::{
        WorkspaceId,
        credentials::{IssuedKey, Role, check_workspace_name},
        flow::{FlowDefinition, Step},
        timers::WorkspaceSettings,
    },
    store::{KeySummary, Location, NewKey, Store, StoreError, StoredFlow, WorkspaceSummary, copy},
};

/// The workspace an empty database gets.
pub const DEFAULT_WORKSPACE: &str = "default";

/// Why an administrative command failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// A name that is not acceptable.
    #[error("{0}")]
    InvalidName(String),
    /// The workspace exists already.
    #[error("workspace {0:?} already exists")]
    WorkspaceExists(String),
    /// No such workspace.
    #[error("no workspace named {0:?}; create it with `conversations workspace create {0}`")]
    NoSuchWorkspace(String),
    /// No such key, or it was revoked already.
    #[error("no active key with id {0:?}")]
    NoSuchKey(String),
    /// The operating system gave no randomness.
    #[error("could not read random bytes: {0}")]
    Random(String),
    /// A flow file that is not a valid flow.
    #[error("the flow is not valid:\n{0}")]
    InvalidFlow(String),
    /// A flow file that cannot be read.
    #[error("cannot read the flow file: {0}")]
    FlowFile(String),
    /// A flow id that does not exist in the workspace.
    #[error("no flow {0:?} in this workspace; leave flow_id out to create a new flow")]
    NoSuchFlow(String),
    /// A setting that is not acceptable.
    #[error("{0}")]
    InvalidSetting(String),
    /// A copy from a database into itself.
    #[error("--from and --to name the same database ({0})")]
    SameDatabase(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<AppError> for AdminError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::InvalidArgument(violations) => Self::InvalidFlow(
                violations
                    .iter()
                    .map(|v| format!("  {} {}", v.field, v.description))
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
            AppError::FlowNotFound(id) => Self::NoSuchFlow(id),
            AppError::Store(e) => Self::Store(e),
            other => Self::Store(StoreError::Corrupt(other.to_string())),
        }
    }
}

/// A flow file, as `conversations flow apply` reads it (TOML or JSON): the
/// flow's `name` and `steps`, plus `flow_id` to write a new version of an
/// existing flow and `default = true` to make it the workspace default.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowFile {
    /// Update this flow (a new version); absent to create one.
    #[serde(default)]
    pub flow_id: Option<String>,
    /// Make the flow the workspace default.
    #[serde(default)]
    pub default: bool,
    /// The flow's name.
    pub name: String,
    /// The flow's steps.
    pub steps: Vec<Step>,
}

impl FlowFile {
    /// Reads a flow file: JSON when the name ends in `.json`, else TOML.
    pub fn parse(file_name: &str, text: &str) -> Result<Self, AdminError> {
        if file_name.ends_with(".json") {
            serde_json::from_str(text).map_err(|e| AdminError::FlowFile(e.to_string()))
        } else {
            toml::from_str(text).map_err(|e| AdminError::FlowFile(e.to_string()))
        }
    }
}

/// Creates or updates the flow of `file` in `workspace`; returns its id and
/// the version written.
pub async fn apply_flow(
    store: &Store,
    workspace: &str,
    file: FlowFile,
) -> Result<(String, i64), AdminError> {
    let workspace_id = store
        .find_workspace(workspace)
        .await?
        .ok_or_else(|| AdminError::NoSuchWorkspace(workspace.to_owned()))?;
    // The command line acts with the database's authority, as an admin key
    // of the workspace would.
    let caller = Caller {
        workspace_id,
        role: Role::Admin,
        key_id: "command-line".into(),
        session: None,
    };
    let app = super::flows::Flows::new(store.clone());
    let definition = FlowDefinition {
        name: file.name,
        steps: file.steps,
    };
    let view = match &file.flow_id {
        Some(flow_id) => app.update_flow(&caller, flow_id, definition).await?,
        None => app.create_flow(&caller, definition).await?,
    };
    if file.default {
        app.set_default_flow(&caller, Some(&view.flow.flow_id))
            .await?;
    }
    Ok((view.flow.flow_id, view.flow.version))
}

impl From<sqlx::Error> for AdminError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

/// The keys made for a new database.
#[derive(Debug, Clone)]
pub struct BootstrapKeys {
    /// An agent key of the default workspace.
    pub agent: IssuedKey,
    /// A visitor key of the default workspace.
    pub visitor: IssuedKey,
}

/// Copies every row of the database at `from` into the empty one at `to`
/// (migrated first), reporting `progress`; returns each table's rows in both.
pub async fn migrate(
    from: &Location,
    to: &Location,
    progress: impl FnMut(copy::Progress),
) -> Result<Vec<copy::Counted>, AdminError> {
    if from == to {
        return Err(AdminError::SameDatabase(from.to_string()));
    }
    let source = Store::open_existing(from).await?;
    let target = Store::open(to).await?;
    let copied = source.copy_into(&target, progress).await;
    source.close().await;
    target.close().await;
    Ok(copied?)
}

/// What the store keeps of `key`: its id and the hash of its secret.
fn stored(key: &IssuedKey, role: Role) -> NewKey<'_> {
    NewKey {
        key_id: &key.key_id,
        role,
        secret_hash: &key.secret_hash,
    }
}

fn random_key() -> Result<IssuedKey, AdminError> {
    let mut random = [0u8; 40];
    getrandom::fill(&mut random).map_err(|e| AdminError::Random(e.to_string()))?;
    Ok(IssuedKey::from_random(random))
}

/// Creates a workspace.
pub async fn create_workspace(store: &Store, name: &str) -> Result<WorkspaceId, AdminError> {
    check_workspace_name(name).map_err(AdminError::InvalidName)?;
    store
        .create_workspace(name, now())
        .await?
        .ok_or_else(|| AdminError::WorkspaceExists(name.to_owned()))
}

/// An idle time as the CLI takes it: `90s`, `30m`, `2h`, `7d`, or `off`
/// (`None`), in microseconds.
pub fn parse_idle(text: &str) -> Result<Option<i64>, AdminError> {
    if text == "off" {
        return Ok(None);
    }
    let bad = || {
        AdminError::InvalidSetting(format!(
            "--auto-close-after {text:?}: give a number with s, m, h or d (e.g. 30m), or off"
        ))
    };
    let split = text.len().checked_sub(1).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let seconds_per = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    let number: i64 = number.parse().map_err(|_| bad())?;
    number
        .checked_mul(seconds_per * 1_000_000)
        .map(Some)
        .ok_or_else(bad)
}

/// Shows a workspace's settings, after changing what is given: the idle
/// time of auto-close (`Some(None)` turns it off) and its message (empty
/// for none).
pub async fn workspace_settings(
    store: &Store,
    workspace: &str,
    idle: Option<Option<i64>>,
    message: Option<&str>,
) -> Result<WorkspaceSettings, AdminError> {
    let workspace_id = workspace_id(store, workspace).await?;
    let current = settings::get(store, workspace_id).await?;
    if idle.is_none() && message.is_none() {
        return Ok(current);
    }
    let current_auto = current.auto_close.as_ref();
    let after = match idle {
        Some(after) => after,
        None => current_auto.map(|a| a.after_micros),
    };
    let request = SettingsRequest {
        auto_close: match after {
            Some(after) => Some((
                after,
                match message {
                    Some(text) => text.to_owned(),
                    None => current_auto
                        .and_then(|a| a.message.as_ref())
                        .map(|m| m.as_str().to_owned())
                        .unwrap_or_default(),
                },
            )),
            None if message.is_some_and(|m| !m.is_empty()) => {
                return Err(AdminError::InvalidSetting(
                    "--auto-close-message needs auto-close on: give --auto-close-after too".into(),
                ));
            }
            None => None,
        },
    };
    let next = settings::parse(&request).map_err(|e| match e {
        AppError::InvalidArgument(violations) => AdminError::InvalidSetting(
            violations
                .iter()
                .map(|v| format!("{} {}", v.field, v.description))
                .collect::<Vec<_>>()
                .join("; "),
        ),
        other => AdminError::from(other),
    })?;
    settings::update(store, workspace_id, &next).await?;
    Ok(next)
}

/// Every workspace, by name, with its conversations per status and its
/// active keys.
pub async fn list_workspaces(store: &Store) -> Result<Vec<WorkspaceSummary>, AdminError> {
    Ok(store.workspaces().await?)
}

/// The keys of `workspace` (None: of every workspace), oldest first: ids,
/// roles and times, never a secret.
pub async fn list_keys(
    store: &Store,
    workspace: Option<&str>,
) -> Result<Vec<KeySummary>, AdminError> {
    let workspace_id = match workspace {
        Some(name) => Some(workspace_id(store, name).await?),
        None => None,
    };
    Ok(store.keys(workspace_id).await?)
}

/// The newest version of each flow of `workspace`, and its default flow id.
pub async fn list_flows(
    store: &Store,
    workspace: &str,
) -> Result<(Vec<StoredFlow>, Option<String>), AdminError> {
    let workspace_id = workspace_id(store, workspace).await?;
    Ok(store.flows(workspace_id).await?)
}

async fn workspace_id(store: &Store, name: &str) -> Result<WorkspaceId, AdminError> {
    store
        .find_workspace(name)
        .await?
        .ok_or_else(|| AdminError::NoSuchWorkspace(name.to_owned()))
}

/// Makes a key for a workspace; the returned token is the only copy.
pub async fn create_key(
    store: &Store,
    workspace: &str,
    role: Role,
) -> Result<IssuedKey, AdminError> {
    let key = random_key()?;
    if !store
        .create_key(workspace, &stored(&key, role), now())
        .await?
    {
        return Err(AdminError::NoSuchWorkspace(workspace.to_owned()));
    }
    Ok(key)
}

/// Revokes a key, named by its id or by the whole key.
pub async fn revoke_key(store: &Store, key: &str) -> Result<(), AdminError> {
    let key_id = crate::domain::credentials::PresentedKey::parse(key)
        .map_or_else(|| key.to_owned(), |k| k.key_id);
    if !store.revoke_key(&key_id, now()).await? {
        return Err(AdminError::NoSuchKey(key_id));
    }
    Ok(())
}

/// On a database with no workspace, creates `default` with one agent and one
/// visitor key and returns them; otherwise does nothing.
pub async fn bootstrap(store: &Store) -> Result<Option<BootstrapKeys>, AdminError> {
    let agent = random_key()?;
    let visitor = random_key()?;
    let keys = [stored(&agent, Role::Agent), stored(&visitor, Role::Visitor)];
    Ok(store
        .bootstrap(DEFAULT_WORKSPACE, &keys, now())
        .await?
        .map(|_| BootstrapKeys { agent, visitor }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_flow_file_parses_and_validates() {
        let file = FlowFile::parse(
            "greeting.toml",
            include_str!("../../examples/flows/greeting.toml"),
        )
        .expect("the example parses");
        assert!(file.default);
        assert_eq!(file.flow_id, None);
        let definition = FlowDefinition {
            name: file.name,
            steps: file.steps,
        };
        assert!(definition.validate().is_ok());
    }

    #[test]
    fn a_json_flow_file_is_read_as_json_and_unknown_fields_are_refused() {
        let json = r#"{"flow_id": "flow_1", "name": "F",
            "steps": [{"type": "question", "key": "name", "text": "Name?"}]}"#;
        let file = FlowFile::parse("f.json", json).expect("json parses");
        assert_eq!(file.flow_id.as_deref(), Some("flow_1"));
        assert!(!file.default);
        assert!(matches!(
            FlowFile::parse("f.json", r#"{"name": "F", "steps": [], "colour": "red"}"#),
            Err(AdminError::FlowFile(_))
        ));
        assert!(matches!(
            FlowFile::parse("f.toml", "name = \"F\"\nstep = []\n"),
            Err(AdminError::FlowFile(_))
        ));
    }
}
