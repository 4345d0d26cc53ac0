//! The FlowService handlers and the conversions of flow steps between
//! protobuf and the domain's flow definition.

use tonic::{Request, Response, Status};

use super::convert::{Fields, duration, timestamp, to_duration, to_timestamp};
use crate::{
    app::{App, Caller, flows::FlowView},
    domain::{
        flow::{BotContent, FlowDefinition, Step},
        values::FlowId,
    },
    pb::{self, flow_service_server::FlowService},
};

/// Serves `conversations.v1.FlowService`.
#[derive(Debug, Clone)]
pub struct FlowsApi {
    app: App,
}

impl FlowsApi {
    /// Serves the application's flow use cases over gRPC.
    pub fn new(app: App) -> Self {
        Self { app }
    }

    /// The authenticated caller, with an admin key.
    async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        super::admin_caller(&self.app, request).await
    }
}

/// Where a step of the definition came from in the request: its index and
/// the request field path its own fields sit under.
struct Origin {
    index: usize,
    prefix: &'static str,
}

/// A definition from a request's name and steps, with every violation named
/// by the request's own field paths: what protobuf cannot express as a
/// definition (an empty step, a malformed timestamp) is refused here, and
/// the domain's checks run too, so that one call reports everything.
fn definition(fields: &mut Fields, name: &str, steps: &[pb::FlowStep]) -> FlowDefinition {
    let (definition, origins) = convert_steps(fields, name, steps);
    if let Err(violations) = definition.validate() {
        for violation in violations {
            fields.violation(
                &request_path(&violation.field, &origins),
                violation.description,
            );
        }
    }
    definition
}

/// `steps[2].choices[1]` (a path in the definition) as the request names it:
/// `steps[3].question.choices[1]` when an empty step 0 was left out.
fn request_path(field: &str, origins: &[Origin]) -> String {
    let Some(rest) = field.strip_prefix("steps[") else {
        return field.to_owned();
    };
    let Some((index, rest)) = rest.split_once(']') else {
        return field.to_owned();
    };
    let Some(origin) = index.parse::<usize>().ok().and_then(|i| origins.get(i)) else {
        return field.to_owned();
    };
    if rest.is_empty() {
        return format!("steps[{}]", origin.index);
    }
    // Message steps' fields sit under `content` in the definition.
    let rest = rest.strip_prefix(".content").unwrap_or(rest);
    let rest = match (origin.prefix, rest) {
        ("message.appointment", ".duration_nanos") => ".duration",
        (_, rest) => rest,
    };
    format!("steps[{}].{}{rest}", origin.index, origin.prefix)
}

fn convert_steps(
    fields: &mut Fields,
    name: &str,
    steps: &[pb::FlowStep],
) -> (FlowDefinition, Vec<Origin>) {
    use pb::{bot_message_step::Content, flow_step::Step as PbStep};
    let mut origins = Vec::new();
    let steps = steps
        .iter()
        .enumerate()
        .filter_map(|(i, step)| match &step.step {
            None => {
                fields.violation(
                    &format!("steps[{i}]"),
                    "is empty: set message, question or handoff",
                );
                None
            }
            Some(PbStep::Question(q)) => {
                origins.push(Origin {
                    index: i,
                    prefix: "question",
                });
                Some(Step::Question {
                    key: q.key.clone(),
                    text: q.text.clone(),
                    choices: q.choices.clone(),
                })
            }
            Some(PbStep::Handoff(h)) => {
                origins.push(Origin {
                    index: i,
                    prefix: "handoff",
                });
                Some(Step::Handoff {
                    text: (!h.text.is_empty()).then(|| h.text.clone()),
                })
            }
            Some(PbStep::Message(m)) => {
                let content = match &m.content {
                    None => {
                        fields.violation(
                            &format!("steps[{i}].message"),
                            "is empty: set text, meeting_link or appointment",
                        );
                        return None;
                    }
                    Some(Content::Text(text)) => BotContent::Text { text: text.clone() },
                    Some(Content::MeetingLink(link)) => BotContent::MeetingLink {
                        url: link.url.clone(),
                        provider: link.provider.clone(),
                    },
                    Some(Content::Appointment(a)) => {
                        let field = format!("steps[{i}].message.appointment");
                        let start_time = timestamp(
                            fields,
                            &format!("{field}.start_time"),
                            a.start_time.as_ref(),
                        );
                        let duration_nanos =
                            duration(fields, &format!("{field}.duration"), a.duration.as_ref());
                        BotContent::Appointment {
                            start_time: start_time?,
                            duration_nanos: duration_nanos?,
                            title: a.title.clone(),
                            url: (!a.url.is_empty()).then(|| a.url.clone()),
                        }
                    }
                };
                let prefix = match content {
                    BotContent::Text { .. } => "message",
                    BotContent::MeetingLink { .. } => "message.meeting_link",
                    BotContent::Appointment { .. } => "message.appointment",
                };
                origins.push(Origin { index: i, prefix });
                Some(Step::Message { content })
            }
        })
        .collect();
    let definition = FlowDefinition {
        name: name.to_owned(),
        steps,
    };
    (definition, origins)
}

fn to_pb_step(step: &Step) -> pb::FlowStep {
    use pb::{bot_message_step::Content, flow_step::Step as PbStep};
    let step = match step {
        Step::Question { key, text, choices } => PbStep::Question(pb::QuestionStep {
            key: key.clone(),
            text: text.clone(),
            choices: choices.clone(),
        }),
        Step::Handoff { text } => PbStep::Handoff(pb::HandoffStep {
            text: text.clone().unwrap_or_default(),
        }),
        Step::Message { content } => PbStep::Message(pb::BotMessageStep {
            content: Some(match content {
                BotContent::Text { text } => Content::Text(text.clone()),
                BotContent::MeetingLink { url, provider } => {
                    Content::MeetingLink(pb::MeetingLink {
                        url: url.clone(),
                        provider: provider.clone(),
                    })
                }
                BotContent::Appointment {
                    start_time,
                    duration_nanos,
                    title,
                    url,
                } => Content::Appointment(pb::Appointment {
                    start_time: Some(to_timestamp(*start_time)),
                    duration: Some(to_duration(*duration_nanos)),
                    title: title.clone(),
                    url: url.clone().unwrap_or_default(),
                }),
            }),
        }),
    };
    pb::FlowStep { step: Some(step) }
}

fn to_pb_flow(view: &FlowView) -> pb::Flow {
    pb::Flow {
        flow_id: view.flow.flow_id.clone(),
        version: view.flow.version,
        name: view.flow.definition.name.clone(),
        steps: view.flow.definition.steps.iter().map(to_pb_step).collect(),
        is_default: view.is_default,
        create_time: Some(to_timestamp(view.flow.create_time)),
    }
}

#[tonic::async_trait]
impl FlowService for FlowsApi {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn create_flow(
        &self,
        request: Request<pb::CreateFlowRequest>,
    ) -> Result<Response<pb::CreateFlowResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let mut f = Fields::default();
        let definition = definition(&mut f, &req.name, &req.steps);
        let definition = f.done(Some(definition))?;
        let view = self.app.flows().create_flow(&caller, definition).await?;
        Ok(Response::new(pb::CreateFlowResponse {
            flow: Some(to_pb_flow(&view)),
        }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn get_flow(
        &self,
        request: Request<pb::GetFlowRequest>,
    ) -> Result<Response<pb::GetFlowResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let mut f = Fields::default();
        let flow_id = f.check("flow_id", FlowId::parse(&req.flow_id));
        if req.version < 0 {
            f.violation("version", "must not be negative");
        }
        let flow_id = f.done(flow_id)?;
        let version = (req.version > 0).then_some(req.version);
        let view = self
            .app
            .flows()
            .get_flow(&caller, flow_id.as_str(), version)
            .await?;
        Ok(Response::new(pb::GetFlowResponse {
            flow: Some(to_pb_flow(&view)),
        }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn list_flows(
        &self,
        request: Request<pb::ListFlowsRequest>,
    ) -> Result<Response<pb::ListFlowsResponse>, Status> {
        let caller = self.caller(&request).await?;
        let views = self.app.flows().list_flows(&caller).await?;
        Ok(Response::new(pb::ListFlowsResponse {
            flows: views.iter().map(to_pb_flow).collect(),
        }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn update_flow(
        &self,
        request: Request<pb::UpdateFlowRequest>,
    ) -> Result<Response<pb::UpdateFlowResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let mut f = Fields::default();
        let flow_id = f.check("flow_id", FlowId::parse(&req.flow_id));
        let definition = definition(&mut f, &req.name, &req.steps);
        let (flow_id, definition) = f.done((|| Some((flow_id?, definition)))())?;
        let view = self
            .app
            .flows()
            .update_flow(&caller, flow_id.as_str(), definition)
            .await?;
        Ok(Response::new(pb::UpdateFlowResponse {
            flow: Some(to_pb_flow(&view)),
        }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn set_default_flow(
        &self,
        request: Request<pb::SetDefaultFlowRequest>,
    ) -> Result<Response<pb::SetDefaultFlowResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let mut f = Fields::default();
        let flow_id = f.optional("flow_id", &req.flow_id, FlowId::parse);
        let flow_id = f.done(Some(flow_id))?;
        let view = self
            .app
            .flows()
            .set_default_flow(&caller, flow_id.as_ref().map(FlowId::as_str))
            .await?;
        Ok(Response::new(pb::SetDefaultFlowResponse {
            flow: view.as_ref().map(to_pb_flow),
        }))
    }
}
