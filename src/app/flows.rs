//! Flow administration (admin keys): create, read, list, update (a new
//! version) and choose the workspace default.

use super::{App, AppError, Caller, FieldViolation, now};
use crate::{
    domain::flow::{FlowDefinition, FlowViolation},
    store::{DefaultFlow, Store, StoredFlow},
};

/// The flow use cases, over the store alone (no writer, no feed): the
/// command line runs them beside a serving server.
#[derive(Debug, Clone)]
pub struct Flows {
    store: Store,
}

impl App {
    /// The flow use cases.
    pub fn flows(&self) -> Flows {
        Flows::new(self.store.clone())
    }
}

/// A flow version and whether it is the workspace default.
#[derive(Debug, Clone)]
pub struct FlowView {
    /// The stored version.
    pub flow: StoredFlow,
    /// True when it is the workspace's default flow.
    pub is_default: bool,
}

fn invalid(violations: Vec<FlowViolation>) -> AppError {
    AppError::InvalidArgument(
        violations
            .into_iter()
            .map(|v| FieldViolation {
                field: v.field,
                description: v.description,
            })
            .collect(),
    )
}

impl Flows {
    /// The flow use cases over `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    fn store(&self) -> &Store {
        &self.store
    }

    /// Creates a flow at version 1.
    pub async fn create_flow(
        &self,
        caller: &Caller,
        definition: FlowDefinition,
    ) -> Result<FlowView, AppError> {
        caller.require_admin()?;
        let valid = definition.validate().map_err(invalid)?;
        let flow = StoredFlow {
            flow_id: format!("flow_{}", ulid::Ulid::new()),
            version: 1,
            definition: valid.to_definition(),
            create_time: now(),
        };
        self.store().insert_flow(caller.workspace_id, &flow).await?;
        Ok(FlowView {
            flow,
            is_default: false,
        })
    }

    /// A flow's newest version, or `version`.
    pub async fn get_flow(
        &self,
        caller: &Caller,
        flow_id: &str,
        version: Option<i64>,
    ) -> Result<FlowView, AppError> {
        caller.require_admin()?;
        let (flow, is_default) = self
            .store()
            .flow(caller.workspace_id, flow_id, version)
            .await?
            .ok_or_else(|| AppError::FlowNotFound(flow_id.to_owned()))?;
        Ok(FlowView { flow, is_default })
    }

    /// The newest version of each flow of the workspace.
    pub async fn list_flows(&self, caller: &Caller) -> Result<Vec<FlowView>, AppError> {
        caller.require_admin()?;
        let (all, default) = self.store().flows(caller.workspace_id).await?;
        Ok(all
            .into_iter()
            .map(|flow| FlowView {
                is_default: default.as_deref() == Some(flow.flow_id.as_str()),
                flow,
            })
            .collect())
    }

    /// Writes a new version of a flow. Conversations already running keep
    /// the version they started with.
    pub async fn update_flow(
        &self,
        caller: &Caller,
        flow_id: &str,
        definition: FlowDefinition,
    ) -> Result<FlowView, AppError> {
        caller.require_admin()?;
        let valid = definition.validate().map_err(invalid)?;
        let definition = valid.to_definition();
        let (flow, is_default) = self
            .store()
            .update_flow(caller.workspace_id, flow_id, |current| StoredFlow {
                flow_id: current.flow_id,
                version: current.version + 1,
                definition,
                create_time: now(),
            })
            .await?
            .ok_or_else(|| AppError::FlowNotFound(flow_id.to_owned()))?;
        Ok(FlowView { flow, is_default })
    }

    /// Makes `flow_id` the workspace default, or clears it with `None`.
    pub async fn set_default_flow(
        &self,
        caller: &Caller,
        flow_id: Option<&str>,
    ) -> Result<Option<FlowView>, AppError> {
        caller.require_admin()?;
        let flow = match self
            .store()
            .set_default_flow(caller.workspace_id, flow_id)
            .await?
        {
            DefaultFlow::Set(flow) => flow,
            DefaultFlow::NoSuchFlow => {
                return Err(AppError::FlowNotFound(
                    flow_id.unwrap_or_default().to_owned(),
                ));
            }
        };
        Ok(flow.map(|flow| FlowView {
            flow,
            is_default: true,
        }))
    }
}
