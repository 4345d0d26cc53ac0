//! Conversation flows: the bot playbook that greets a visitor, asks a few
//! questions and hands the conversation over to an agent.
//!
//! Three layers, each pure:
//!
//! - **Definition** ([`FlowDefinition`], [`Step`], [`BotContent`]): what an
//!   admin writes, in a TOML or JSON file or a request, as plain strings. It
//!   is what serde reads and writes, so unknown fields are refused rather
//!   than silently ignored (a typo such as `choice =` must not vanish).
//! - **Validation** ([`FlowDefinition::validate`]): checks every rule and
//!   collects *all* violations, each naming its field path
//!   (`steps[2].choices[1]`), so one round trip tells an admin everything to
//!   fix. On success it returns a [`ValidFlow`], whose steps hold the
//!   validated value types of [`super::values`] and [`super::message`]; only
//!   `validate` makes one, so the engine never re-checks anything.
//! - **Engine** ([`start`], [`on_visitor_message`], [`on_agent_action`],
//!   [`restart`]): given the [`ValidFlow`] and a [`FlowRun`] (the state one
//!   conversation keeps), returns the next run state and the [`BotOutput`]s
//!   to write. It knows nothing about messages ids, positions or events: the
//!   lifecycle turns a [`BotOutput::Post`] into a BOT message for everyone and
//!   a [`BotOutput::Handoff`] into a note for the agents, in the same
//!   transaction as the change that caused them.
//!
//! The bot posts steps in order until it reaches a question (it then waits
//! for the visitor's next message, which is recorded as the answer), a
//! handoff (the flow ends and the agents are told, with the answers), or the
//! end of the steps (the flow completes quietly). An agent message stops the
//! flow. A restart runs the flow again from its first step with no answers.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::message::{Appointment, MessageContent};
use super::values::{
    HttpsUrl, Invalid, Label, MAX_PROVIDER_CHARS, MAX_TITLE_CHARS, MessageText, Micros,
    check_appointment_duration,
};

/// Most steps a flow may have. A playbook that needs more is a form, not a
/// chat.
pub const MAX_FLOW_STEPS: usize = 50;
/// Most quick-reply choices a question may offer; more do not fit a widget.
pub const MAX_CHOICES: usize = 10;
/// Longest quick-reply choice, in characters; it is shown on a button.
pub const MAX_CHOICE_CHARS: usize = 100;
/// Longest question key, in characters.
pub const MAX_QUESTION_KEY_CHARS: usize = 64;
/// Longest flow name, in characters.
pub const MAX_FLOW_NAME_CHARS: usize = 128;
/// Longest answer quoted in the agents' handoff note, in characters; the
/// full answers travel alongside in [`BotOutput::Handoff::answers`].
pub const MAX_NOTE_ANSWER_CHARS: usize = 200;
/// Longest answer kept in a run, in characters. The visitor's whole message
/// stays in the thread; the run keeps a bounded copy, since it travels in
/// every conversation snapshot (lists, events).
pub const MAX_ANSWER_CHARS: usize = 1000;

/// Earliest appointment start: 0001-01-01T00:00:00Z, in microseconds, the
/// first instant a `google.protobuf.Timestamp` can carry.
const MIN_START_MICROS: i64 = -62_135_596_800_000_000;
/// Latest appointment start: 9999-12-31T23:59:59.999999Z.
const MAX_START_MICROS: i64 = 253_402_300_799_999_999;

/// What the agents' handoff note says before the answers.
const HANDOFF_SENTENCE: &str = "The visitor is waiting for an agent.";

// ---------------------------------------------------------------------------
// Definition
// ---------------------------------------------------------------------------

/// A flow as an admin writes it: a name and an ordered list of steps. Not yet
/// checked; call [`FlowDefinition::validate`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowDefinition {
    /// A name for admins: 1 to [`MAX_FLOW_NAME_CHARS`] characters, no
    /// control characters; surrounding white space is trimmed.
    pub name: String,
    /// The steps, run in order: 1 to [`MAX_FLOW_STEPS`].
    pub steps: Vec<Step>,
}

/// One step of a flow definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// The bot posts something and moves straight on.
    Message {
        /// What the bot posts.
        content: BotContent,
    },
    /// The bot asks; the visitor's next message is the answer.
    Question {
        /// The answer's name, e.g. `company`: 1 to
        /// [`MAX_QUESTION_KEY_CHARS`] of `a-z`, `0-9` and `_`, unique in
        /// the flow.
        key: String,
        /// What the bot asks; non-blank, at most 8 KiB.
        text: String,
        /// Quick replies the widget may offer, at most [`MAX_CHOICES`], each
        /// non-blank, at most [`MAX_CHOICE_CHARS`] characters and different
        /// from the others ignoring case and surrounding white space. The
        /// visitor may still answer in their own words.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        choices: Vec<String>,
    },
    /// The flow ends and the agents are told the visitor is waiting. Must be
    /// the last step, since nothing after it would run.
    Handoff {
        /// A message to the visitor first, e.g. "Connecting you to sales…";
        /// absent or empty for none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
    },
}

/// What a message step posts, as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum BotContent {
    /// Plain text; non-blank, at most 8 KiB.
    Text {
        /// The text.
        text: String,
    },
    /// A link to an online meeting.
    MeetingLink {
        /// An absolute https URL.
        url: String,
        /// Who hosts it, e.g. "Zoom"; may be empty.
        #[serde(default)]
        provider: String,
    },
    /// An appointment offer at a fixed time. Flows are versioned, so an admin
    /// offers a new slot by updating the flow.
    Appointment {
        /// When it starts, in microseconds since the Unix epoch (years 1 to
        /// 9999).
        start_time: Micros,
        /// How long it lasts, in nanoseconds: more than zero, at most 24
        /// hours.
        duration_nanos: i64,
        /// A title; may be empty.
        #[serde(default)]
        title: String,
        /// A booking or meeting link (https); absent or empty for none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<String>,
    },
}

/// One reason a flow definition is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowViolation {
    /// The path of the offending field, e.g. `steps[2].choices[1]`; the gRPC
    /// layer may prefix it with the request field that holds the flow.
    pub field: String,
    /// What is wrong and how to fix it; completes the sentence
    /// "`<field>` …", as [`Invalid`] does.
    pub description: String,
}

// ---------------------------------------------------------------------------
// Validated flow
// ---------------------------------------------------------------------------

/// A question key: 1 to [`MAX_QUESTION_KEY_CHARS`] of `a-z`, `0-9` and `_`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct QuestionKey(String);

impl QuestionKey {
    /// Accepts 1 to [`MAX_QUESTION_KEY_CHARS`] characters of `a-z`, `0-9`
    /// and `_`. Keys name answers in stored runs and in integrations, so they
    /// are kept to a spelling every system can use as-is.
    pub fn parse(value: &str) -> Result<Self, Invalid> {
        if value.is_empty() {
            return Err("is required".into());
        }
        let chars = value.chars().count();
        if chars > MAX_QUESTION_KEY_CHARS {
            return Err(format!(
                "must be at most {MAX_QUESTION_KEY_CHARS} characters (got {chars})"
            ));
        }
        if !value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(format!(
                "must use only a-z, 0-9 and _ (got {value:?}), e.g. \"company_name\""
            ));
        }
        Ok(Self(value.to_owned()))
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for QuestionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A checked question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidQuestion {
    /// The answer's name, unique in the flow.
    pub key: QuestionKey,
    /// What the bot asks.
    pub text: MessageText,
    /// Quick replies, trimmed, distinct ignoring case.
    pub choices: Vec<Label>,
}

impl ValidQuestion {
    /// The choice `answer` picks, comparing trimmed and ignoring case;
    /// `None` for an answer in the visitor's own words. Validation refuses
    /// choices that differ only in case, so at most one matches.
    pub fn matching_choice(&self, answer: &str) -> Option<&Label> {
        let folded = fold(answer);
        self.choices.iter().find(|c| fold(c.as_str()) == folded)
    }

    /// What gets recorded for the visitor's `text`: the choice's own spelling
    /// when it matches one, else the text trimmed. Free text is accepted even
    /// when the question offers choices: quick replies are a shortcut, not a
    /// form field, and a visitor who types "both, really" has answered. At
    /// most [`MAX_ANSWER_CHARS`] characters are kept.
    pub fn recorded_answer(&self, text: &str) -> String {
        match self.matching_choice(text) {
            Some(choice) => choice.as_str().to_owned(),
            None => text.trim().chars().take(MAX_ANSWER_CHARS).collect(),
        }
    }
}

/// A checked step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValidStep {
    /// The bot posts `content` (text, meeting link or appointment; never a
    /// transactional message) and moves on.
    Message {
        /// What the bot posts.
        content: MessageContent,
    },
    /// The bot asks and waits for the answer.
    Question(ValidQuestion),
    /// The flow ends and the agents are told; always the last step.
    Handoff {
        /// What the bot tells the visitor first, if anything.
        text: Option<MessageText>,
    },
}

/// A flow that passed [`FlowDefinition::validate`]: 1 to [`MAX_FLOW_STEPS`]
/// checked steps, unique question keys, a handoff only at the end. Only
/// `validate` makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidFlow {
    name: String,
    steps: Vec<ValidStep>,
}

impl ValidFlow {
    /// The flow's name, trimmed.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The steps, in order; never empty.
    pub fn steps(&self) -> &[ValidStep] {
        &self.steps
    }

    /// The definition in its normal form (trimmed name and choices, empty
    /// optional texts dropped). It validates back to an equal flow, so it is
    /// what to store and to show.
    pub fn to_definition(&self) -> FlowDefinition {
        let steps = self
            .steps
            .iter()
            .map(|step| match step {
                ValidStep::Message { content } => Step::Message {
                    content: bot_content(content),
                },
                ValidStep::Question(q) => Step::Question {
                    key: q.key.as_str().to_owned(),
                    text: q.text.as_str().to_owned(),
                    choices: q.choices.iter().map(|c| c.as_str().to_owned()).collect(),
                },
                ValidStep::Handoff { text } => Step::Handoff {
                    text: text.as_ref().map(|t| t.as_str().to_owned()),
                },
            })
            .collect();
        FlowDefinition {
            name: self.name.clone(),
            steps,
        }
    }
}

/// Writes validated content back in the definition's terms.
fn bot_content(content: &MessageContent) -> BotContent {
    match content {
        MessageContent::Text { text } => BotContent::Text {
            text: text.as_str().to_owned(),
        },
        MessageContent::MeetingLink { url, provider } => BotContent::MeetingLink {
            url: url.as_str().to_owned(),
            provider: provider.as_str().to_owned(),
        },
        MessageContent::Appointment(a) => BotContent::Appointment {
            start_time: a.start_time,
            duration_nanos: a.duration_nanos,
            title: a.title.as_str().to_owned(),
            url: a.url.as_ref().map(|u| u.as_str().to_owned()),
        },
        // `validate` never puts a transactional message in a step; render it
        // as its sentence rather than fail, so this stays total.
        MessageContent::Transactional(t) => BotContent::Text {
            text: t.text.clone(),
        },
    }
}

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

/// The violations found so far.
#[derive(Default)]
struct Violations(Vec<FlowViolation>);

impl Violations {
    fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FlowViolation {
            field: field.into(),
            description: description.into(),
        });
    }

    /// The value, or `None` with the refusal recorded against `field`.
    fn check<T>(&mut self, field: impl Into<String>, result: Result<T, Invalid>) -> Option<T> {
        result.map_err(|why| self.add(field, why)).ok()
    }

    /// An optional text: absent or empty is none, else it must parse.
    fn optional<T>(
        &mut self,
        field: impl Into<String>,
        value: Option<&str>,
        parse: impl FnOnce(&str) -> Result<T, Invalid>,
    ) -> Option<Option<T>> {
        match value {
            None | Some("") => Some(None),
            Some(value) => self.check(field, parse(value)).map(Some),
        }
    }
}

/// How choices and answers are compared: trimmed, ignoring case.
fn fold(value: &str) -> String {
    value.trim().to_lowercase()
}

fn check_name(value: &str) -> Result<String, Invalid> {
    let value = value.trim();
    if value.is_empty() {
        return Err("is required: give the flow a name, e.g. \"Sales greeting\"".into());
    }
    let chars = value.chars().count();
    if chars > MAX_FLOW_NAME_CHARS {
        return Err(format!(
            "must be at most {MAX_FLOW_NAME_CHARS} characters (got {chars})"
        ));
    }
    if value.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(value.to_owned())
}

fn check_start_time(value: Micros) -> Result<Micros, Invalid> {
    if (MIN_START_MICROS..=MAX_START_MICROS).contains(&value.0) {
        Ok(value)
    } else {
        Err("must fall in the years 1 to 9999 (microseconds since the Unix epoch)".into())
    }
}

fn check_choice(value: &str) -> Result<Label, Invalid> {
    if value.trim().is_empty() {
        return Err("must not be empty or only white space; remove it instead".into());
    }
    Label::parse(value, MAX_CHOICE_CHARS)
}

fn validate_content(
    v: &mut Violations,
    path: &str,
    content: &BotContent,
) -> Option<MessageContent> {
    match content {
        BotContent::Text { text } => {
            let text = v.check(format!("{path}.text"), MessageText::parse(text))?;
            Some(MessageContent::Text { text })
        }
        BotContent::MeetingLink { url, provider } => {
            let url = v.check(format!("{path}.url"), HttpsUrl::parse(url));
            let provider = v.check(
                format!("{path}.provider"),
                Label::parse(provider, MAX_PROVIDER_CHARS),
            );
            Some(MessageContent::MeetingLink {
                url: url?,
                provider: provider?,
            })
        }
        BotContent::Appointment {
            start_time,
            duration_nanos,
            title,
            url,
        } => {
            let start_time = v.check(format!("{path}.start_time"), check_start_time(*start_time));
            let duration = v.check(
                format!("{path}.duration_nanos"),
                check_appointment_duration(*duration_nanos),
            );
            let title = v.check(
                format!("{path}.title"),
                Label::parse(title, MAX_TITLE_CHARS),
            );
            let url = v.optional(format!("{path}.url"), url.as_deref(), HttpsUrl::parse);
            duration?;
            Some(MessageContent::Appointment(Appointment {
                start_time: start_time?,
                duration_nanos: *duration_nanos,
                title: title?,
                url: url?,
            }))
        }
    }
}

fn validate_question(
    v: &mut Violations,
    path: &str,
    key: &str,
    text: &str,
    choices: &[String],
) -> Option<ValidQuestion> {
    let key = v.check(format!("{path}.key"), QuestionKey::parse(key));
    let text = v.check(format!("{path}.text"), MessageText::parse(text));
    if choices.len() > MAX_CHOICES {
        v.add(
            format!("{path}.choices"),
            format!(
                "must have at most {MAX_CHOICES} choices (got {}); keep the most common answers",
                choices.len()
            ),
        );
    }
    // Folded spelling -> index of its first occurrence.
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut valid_choices = Vec::with_capacity(choices.len());
    let mut choices_ok = true;
    for (k, choice) in choices.iter().enumerate() {
        let field = format!("{path}.choices[{k}]");
        let Some(label) = v.check(field.clone(), check_choice(choice)) else {
            choices_ok = false;
            continue;
        };
        if let Some(first) = seen.get(&fold(label.as_str())) {
            v.add(
                field,
                format!(
                    "duplicates choices[{first}] ({label:?} ignoring case and surrounding white space); each quick reply must differ",
                    label = label.as_str()
                ),
            );
            choices_ok = false;
            continue;
        }
        seen.insert(fold(label.as_str()), k);
        valid_choices.push(label);
    }
    if !choices_ok || choices.len() > MAX_CHOICES {
        return None;
    }
    Some(ValidQuestion {
        key: key?,
        text: text?,
        choices: valid_choices,
    })
}

impl FlowDefinition {
    /// Checks every rule and returns the flow ready to run, or every
    /// violation found (never just the first), in field order.
    ///
    /// The rules: a name; 1 to [`MAX_FLOW_STEPS`] steps; texts non-blank
    /// and within the message limits; meeting and booking links https;
    /// appointments of a valid time and length; question keys well formed
    /// and unique; choices non-blank, short, distinct ignoring case and at
    /// most [`MAX_CHOICES`]; a handoff only as the last step, since the steps
    /// after it could never run.
    pub fn validate(&self) -> Result<ValidFlow, Vec<FlowViolation>> {
        let mut v = Violations::default();
        let name = v.check("name", check_name(&self.name));
        if self.steps.is_empty() {
            v.add(
                "steps",
                "must have at least one step, e.g. a greeting message",
            );
        }
        if self.steps.len() > MAX_FLOW_STEPS {
            v.add(
                "steps",
                format!(
                    "must have at most {MAX_FLOW_STEPS} steps (got {})",
                    self.steps.len()
                ),
            );
        }
        let last = self.steps.len().saturating_sub(1);
        // Question key -> index of the step that first uses it.
        let mut keys: HashMap<&str, usize> = HashMap::new();
        let mut steps = Vec::with_capacity(self.steps.len());
        for (i, step) in self.steps.iter().enumerate() {
            let path = format!("steps[{i}]");
            let valid = match step {
                Step::Message { content } => {
                    validate_content(&mut v, &format!("{path}.content"), content)
                        .map(|content| ValidStep::Message { content })
                }
                Step::Question { key, text, choices } => {
                    let question = validate_question(&mut v, &path, key, text, choices);
                    if QuestionKey::parse(key).is_ok() {
                        if let Some(first) = keys.get(key.as_str()) {
                            v.add(
                                format!("{path}.key"),
                                format!(
                                    "duplicates steps[{first}].key ({key:?}); each question needs its own key"
                                ),
                            );
                        } else {
                            keys.insert(key, i);
                        }
                    }
                    question.map(ValidStep::Question)
                }
                Step::Handoff { text } => {
                    if i != last {
                        let after = last - i;
                        v.add(
                            path.clone(),
                            format!(
                                "is a handoff, which ends the flow, so the {after} step(s) after it would never run; move the handoff to the end or remove them"
                            ),
                        );
                    }
                    v.optional(format!("{path}.text"), text.as_deref(), MessageText::parse)
                        .map(|text| ValidStep::Handoff { text })
                }
            };
            steps.extend(valid);
        }
        match name {
            Some(name) if v.0.is_empty() => Ok(ValidFlow { name, steps }),
            _ => Err(v.0),
        }
    }
}

// ---------------------------------------------------------------------------
// Engine
// ---------------------------------------------------------------------------

/// Where a run stands. Every state is a resting state: the engine never
/// returns a run that is midway through posting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// The bot asked [`FlowRun::step`] and waits for the visitor's answer.
    AwaitingAnswer,
    /// The flow reached its handoff; the agents were told.
    HandedOff,
    /// The flow ran out of steps without a handoff.
    Completed,
    /// An agent wrote before the flow finished and took over.
    Stopped,
}

impl RunStatus {
    /// The name used in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AwaitingAnswer => "awaiting_answer",
            Self::HandedOff => "handed_off",
            Self::Completed => "completed",
            Self::Stopped => "stopped",
        }
    }

    /// Reads the storage name back.
    pub fn from_stored(value: &str) -> Option<Self> {
        match value {
            "awaiting_answer" => Some(Self::AwaitingAnswer),
            "handed_off" => Some(Self::HandedOff),
            "completed" => Some(Self::Completed),
            "stopped" => Some(Self::Stopped),
            _ => None,
        }
    }

    /// True while the bot still acts on visitor messages.
    pub fn is_active(self) -> bool {
        match self {
            Self::AwaitingAnswer => true,
            Self::HandedOff | Self::Completed | Self::Stopped => false,
        }
    }
}

/// A visitor's answer to one question.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// The question's key.
    pub key: QuestionKey,
    /// What the visitor said, trimmed; a matching choice in the choice's own
    /// spelling.
    pub value: String,
}

/// A conversation's progress through its flow: what it stores and shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRun {
    /// The flow being run.
    pub flow_id: String,
    /// The flow version being run; it does not change when the flow is
    /// updated mid-run.
    pub version: i64,
    /// The current step: the awaited question while
    /// [`RunStatus::AwaitingAnswer`], the question the agent took over at
    /// when [`RunStatus::Stopped`], the number of steps once finished.
    pub step: usize,
    /// The answers collected in this run, in the order asked.
    pub answers: Vec<Answer>,
    /// Where the run stands.
    pub status: RunStatus,
}

impl FlowRun {
    /// The answer recorded for `key`, if any.
    pub fn answer(&self, key: &str) -> Option<&str> {
        self.answers
            .iter()
            .find(|a| a.key.as_str() == key)
            .map(|a| a.value.as_str())
    }

    /// The question the run waits on, looked up in `flow`; `None` when the
    /// run is not awaiting an answer or `flow` is not the one it runs.
    pub fn awaited_question<'f>(&self, flow: &'f ValidFlow) -> Option<&'f ValidQuestion> {
        if self.status != RunStatus::AwaitingAnswer {
            return None;
        }
        match flow.steps.get(self.step) {
            Some(ValidStep::Question(question)) => Some(question),
            Some(ValidStep::Message { .. } | ValidStep::Handoff { .. }) | None => None,
        }
    }
}

/// What the bot writes as a run advances, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BotOutput {
    /// A bot message the visitor and the agents see.
    Post {
        /// What it says: text, a meeting link or an appointment.
        content: MessageContent,
        /// Quick replies the widget may offer (a question's choices);
        /// usually empty.
        quick_replies: Vec<Label>,
    },
    /// The flow handed over: tell the agents, not the visitor, that the
    /// visitor is waiting.
    Handoff {
        /// The note in English: "The visitor is waiting for an agent.",
        /// followed by the answers as `key: value; key: value`, each quoted
        /// answer cut at [`MAX_NOTE_ANSWER_CHARS`] characters.
        text: String,
        /// The answers of this run, in full.
        answers: Vec<Answer>,
    },
}

/// Starts `flow` (version `version` of flow `flow_id`): posts its steps from
/// the first up to and including the first question, or through the handoff,
/// or to the end.
pub fn start(flow: &ValidFlow, flow_id: &str, version: i64) -> (FlowRun, Vec<BotOutput>) {
    let run = FlowRun {
        flow_id: flow_id.to_owned(),
        version,
        step: 0,
        answers: Vec::new(),
        status: RunStatus::AwaitingAnswer,
    };
    advance(flow, run, 0)
}

/// Starts the flow afresh for a restarted conversation: from its first step,
/// with no answers, whatever the earlier run reached. The earlier run's
/// messages stay in the thread; only its state is replaced. Which version to
/// replay is the caller's choice (the earlier run's `version` replays the
/// same playbook).
pub fn restart(flow: &ValidFlow, flow_id: &str, version: i64) -> (FlowRun, Vec<BotOutput>) {
    start(flow, flow_id, version)
}

/// The visitor wrote `text`. While the run awaits an answer, records it as
/// the answer to the current question (see
/// [`ValidQuestion::recorded_answer`]) and posts the following steps up to
/// the next question, the handoff or the end.
///
/// Nothing changes and nothing is posted when the run is not awaiting an
/// answer, when `text` is blank (a visitor who sends only a link or an
/// appointment has not answered; pass their text, if any), or when `flow` is
/// not the flow and version the run was started with (its step is not a
/// question there).
pub fn on_visitor_message(
    run: &FlowRun,
    flow: &ValidFlow,
    text: &str,
) -> (FlowRun, Vec<BotOutput>) {
    let Some(question) = run.awaited_question(flow) else {
        return (run.clone(), Vec::new());
    };
    if text.trim().is_empty() {
        return (run.clone(), Vec::new());
    }
    let mut next = run.clone();
    next.answers.push(Answer {
        key: question.key.clone(),
        value: question.recorded_answer(text),
    });
    advance(flow, next, run.step + 1)
}

/// An agent acted (wrote to the visitor, marked it pending, closed it,
/// reopened it): they take the conversation over, so an active run stops
/// where it is and the bot posts nothing more. A run that already finished
/// keeps its status, so the record still says how the flow ended.
pub fn on_agent_action(run: &FlowRun) -> FlowRun {
    let mut next = run.clone();
    if run.status.is_active() {
        next.status = RunStatus::Stopped;
    }
    next
}

/// Posts steps from index `from` until one makes the bot stop, and sets the
/// run's step and status to where it stopped.
fn advance(flow: &ValidFlow, mut run: FlowRun, from: usize) -> (FlowRun, Vec<BotOutput>) {
    let mut outputs = Vec::new();
    for (i, step) in flow.steps.iter().enumerate().skip(from) {
        match step {
            ValidStep::Message { content } => outputs.push(BotOutput::Post {
                content: content.clone(),
                quick_replies: Vec::new(),
            }),
            ValidStep::Question(question) => {
                outputs.push(BotOutput::Post {
                    content: MessageContent::Text {
                        text: question.text.clone(),
                    },
                    quick_replies: question.choices.clone(),
                });
                run.step = i;
                run.status = RunStatus::AwaitingAnswer;
                return (run, outputs);
            }
            ValidStep::Handoff { text } => {
                if let Some(text) = text {
                    outputs.push(BotOutput::Post {
                        content: MessageContent::Text { text: text.clone() },
                        quick_replies: Vec::new(),
                    });
                }
                outputs.push(BotOutput::Handoff {
                    text: handoff_note(&run.answers),
                    answers: run.answers.clone(),
                });
                run.step = flow.steps.len();
                run.status = RunStatus::HandedOff;
                return (run, outputs);
            }
        }
    }
    run.step = flow.steps.len();
    run.status = RunStatus::Completed;
    (run, outputs)
}

/// "The visitor is waiting for an agent. name: Dana; company: Acme". Answers
/// are put on one line and cut short so the note stays a glance; the full
/// answers travel with it.
fn handoff_note(answers: &[Answer]) -> String {
    if answers.is_empty() {
        return HANDOFF_SENTENCE.to_owned();
    }
    let listed: Vec<String> = answers
        .iter()
        .map(|a| format!("{}: {}", a.key, quote_answer(&a.value)))
        .collect();
    format!("{HANDOFF_SENTENCE} {}", listed.join("; "))
}

fn quote_answer(value: &str) -> String {
    let one_line = value.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= MAX_NOTE_ANSWER_CHARS {
        return one_line;
    }
    let mut cut: String = one_line.chars().take(MAX_NOTE_ANSWER_CHARS - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::values::MAX_TEXT_BYTES;

    fn say(text: &str) -> Step {
        Step::Message {
            content: BotContent::Text { text: text.into() },
        }
    }

    fn ask(key: &str, text: &str, choices: &[&str]) -> Step {
        Step::Question {
            key: key.into(),
            text: text.into(),
            choices: choices.iter().map(|c| (*c).to_owned()).collect(),
        }
    }

    fn handoff(text: Option<&str>) -> Step {
        Step::Handoff {
            text: text.map(str::to_owned),
        }
    }

    fn flow(steps: Vec<Step>) -> FlowDefinition {
        FlowDefinition {
            name: "Sales".into(),
            steps,
        }
    }

    fn sales_flow() -> ValidFlow {
        flow(vec![
            say("Hi! Welcome to Acme."),
            ask("name", "What is your name?", &[]),
            ask("team", "Which team?", &["Sales", "Support"]),
            Step::Message {
                content: BotContent::MeetingLink {
                    url: "https://zoom.us/j/123".into(),
                    provider: "Zoom".into(),
                },
            },
            handoff(Some("Connecting you to an agent…")),
        ])
        .validate()
        .unwrap()
    }

    fn fields(result: Result<ValidFlow, Vec<FlowViolation>>) -> Vec<String> {
        result.unwrap_err().into_iter().map(|v| v.field).collect()
    }

    fn posted_texts(outputs: &[BotOutput]) -> Vec<String> {
        outputs
            .iter()
            .filter_map(|o| match o {
                BotOutput::Post {
                    content: MessageContent::Text { text },
                    ..
                } => Some(text.as_str().to_owned()),
                _ => None,
            })
            .collect()
    }

    fn handoffs(outputs: &[BotOutput]) -> Vec<(&str, &[Answer])> {
        outputs
            .iter()
            .filter_map(|o| match o {
                BotOutput::Handoff { text, answers } => Some((text.as_str(), answers.as_slice())),
                BotOutput::Post { .. } => None,
            })
            .collect()
    }

    // --- validation -------------------------------------------------------

    #[test]
    fn a_well_formed_flow_validates() {
        let flow = sales_flow();
        assert_eq!(flow.name(), "Sales");
        assert_eq!(flow.steps().len(), 5);
    }

    #[test]
    fn a_flow_without_steps_or_name_is_refused_for_both() {
        let def = FlowDefinition {
            name: "   ".into(),
            steps: vec![],
        };
        assert_eq!(fields(def.validate()), ["name", "steps"]);
    }

    #[test]
    fn a_flow_with_too_many_steps_is_refused() {
        let steps = (0..=MAX_FLOW_STEPS).map(|i| say(&format!("{i}"))).collect();
        let violations = flow(steps).validate().unwrap_err();
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].field, "steps");
        assert!(violations[0].description.contains("at most 50"));
        let steps = (0..MAX_FLOW_STEPS).map(|i| say(&format!("{i}"))).collect();
        assert!(flow(steps).validate().is_ok());
    }

    #[test]
    fn a_question_needs_text() {
        let def = flow(vec![ask("a", "", &[]), ask("b", "  \n", &[])]);
        assert_eq!(fields(def.validate()), ["steps[0].text", "steps[1].text"]);
    }

    #[test]
    fn duplicate_choices_are_refused_ignoring_case_and_spaces() {
        let def = flow(vec![ask(
            "team",
            "Which?",
            &["Sales", "Support", " sales "],
        )]);
        let violations = def.validate().unwrap_err();
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].field, "steps[0].choices[2]");
        assert!(violations[0].description.contains("choices[0]"));
    }

    #[test]
    fn empty_and_overlong_choices_are_refused() {
        let long = "x".repeat(MAX_CHOICE_CHARS + 1);
        let def = flow(vec![ask("team", "Which?", &["Sales", "", "  ", &long])]);
        assert_eq!(
            fields(def.validate()),
            [
                "steps[0].choices[1]",
                "steps[0].choices[2]",
                "steps[0].choices[3]"
            ]
        );
    }

    #[test]
    fn too_many_choices_are_refused() {
        let choices: Vec<String> = (0..=MAX_CHOICES).map(|i| format!("c{i}")).collect();
        let choices: Vec<&str> = choices.iter().map(String::as_str).collect();
        let def = flow(vec![ask("pick", "Pick one", &choices)]);
        assert_eq!(fields(def.validate()), ["steps[0].choices"]);
        let def = flow(vec![ask("pick", "Pick one", &choices[..MAX_CHOICES])]);
        assert!(def.validate().is_ok());
    }

    #[test]
    fn duplicate_question_keys_are_refused_at_the_later_question() {
        let def = flow(vec![
            ask("company", "Company?", &[]),
            say("Thanks"),
            ask("company", "Company again?", &[]),
        ]);
        let violations = def.validate().unwrap_err();
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].field, "steps[2].key");
        assert!(violations[0].description.contains("steps[0].key"));
    }

    #[test]
    fn question_keys_are_lowercase_letters_digits_and_underscores() {
        assert!(QuestionKey::parse("company_size_2").is_ok());
        assert!(QuestionKey::parse(&"k".repeat(MAX_QUESTION_KEY_CHARS)).is_ok());
        for bad in ["", "Company", "first name", "naïve", "a-b"] {
            assert!(QuestionKey::parse(bad).is_err(), "{bad:?}");
        }
        assert!(QuestionKey::parse(&"k".repeat(MAX_QUESTION_KEY_CHARS + 1)).is_err());
        let def = flow(vec![ask("First Name", "Name?", &[])]);
        assert_eq!(fields(def.validate()), ["steps[0].key"]);
    }

    #[test]
    fn a_handoff_before_the_last_step_is_refused() {
        let def = flow(vec![say("Hi"), handoff(None), say("never said")]);
        let violations = def.validate().unwrap_err();
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].field, "steps[1]");
        assert!(violations[0].description.contains("1 step(s)"));
        assert!(flow(vec![say("Hi"), handoff(None)]).validate().is_ok());
    }

    #[test]
    fn a_handoff_text_is_optional_but_not_blank() {
        let empty = flow(vec![handoff(Some(""))]).validate().unwrap();
        assert_eq!(empty.steps(), [ValidStep::Handoff { text: None }]);
        let def = flow(vec![handoff(Some("  "))]);
        assert_eq!(fields(def.validate()), ["steps[0].text"]);
    }

    #[test]
    fn texts_and_content_over_the_message_limits_are_refused() {
        let huge = "x".repeat(MAX_TEXT_BYTES + 1);
        let def = flow(vec![
            say(&huge),
            ask("q", &huge, &[]),
            Step::Message {
                content: BotContent::MeetingLink {
                    url: "http://zoom.us/j/1".into(),
                    provider: "p".repeat(MAX_PROVIDER_CHARS + 1),
                },
            },
            Step::Message {
                content: BotContent::Appointment {
                    start_time: Micros(i64::MAX),
                    duration_nanos: 0,
                    title: "t".repeat(MAX_TITLE_CHARS + 1),
                    url: Some("ftp://example.com".into()),
                },
            },
            handoff(Some(&huge)),
        ]);
        assert_eq!(
            fields(def.validate()),
            [
                "steps[0].content.text",
                "steps[1].text",
                "steps[2].content.url",
                "steps[2].content.provider",
                "steps[3].content.start_time",
                "steps[3].content.duration_nanos",
                "steps[3].content.title",
                "steps[3].content.url",
                "steps[4].text",
            ]
        );
    }

    #[test]
    fn a_valid_appointment_offer_is_kept_with_an_empty_url_as_none() {
        let def = flow(vec![Step::Message {
            content: BotContent::Appointment {
                start_time: Micros(1_700_000_000_000_000),
                duration_nanos: 30 * 60 * 1_000_000_000,
                title: " Demo ".into(),
                url: Some(String::new()),
            },
        }]);
        let valid = def.validate().unwrap();
        let ValidStep::Message {
            content: MessageContent::Appointment(a),
        } = &valid.steps()[0]
        else {
            panic!("not an appointment: {:?}", valid.steps());
        };
        assert_eq!(a.title.as_str(), "Demo");
        assert_eq!(a.url, None);
    }

    #[test]
    fn flow_names_are_trimmed_bounded_and_printable() {
        let mut def = flow(vec![say("Hi")]);
        def.name = "  Sales greeting ".into();
        assert_eq!(def.validate().unwrap().name(), "Sales greeting");
        def.name = "n".repeat(MAX_FLOW_NAME_CHARS + 1);
        assert_eq!(fields(def.validate()), ["name"]);
        def.name = "a\u{7}b".into();
        assert_eq!(fields(def.validate()), ["name"]);
    }

    #[test]
    fn every_violation_is_reported_at_once_in_field_order() {
        let def = FlowDefinition {
            name: String::new(),
            steps: vec![
                ask("Bad Key", "", &["A", "a", ""]),
                handoff(None),
                ask("ok", "Fine?", &[]),
                ask("ok", "Again?", &[]),
            ],
        };
        assert_eq!(
            fields(def.validate()),
            [
                "name",
                "steps[0].key",
                "steps[0].text",
                "steps[0].choices[1]",
                "steps[0].choices[2]",
                "steps[1]",
                "steps[3].key",
            ]
        );
    }

    #[test]
    fn the_normal_definition_validates_back_to_the_same_flow() {
        let def = flow(vec![
            say("Hi"),
            ask("team", "Which team?", &[" Sales ", "Support"]),
            Step::Message {
                content: BotContent::Appointment {
                    start_time: Micros(0),
                    duration_nanos: 1,
                    title: String::new(),
                    url: Some("https://cal.com/acme".into()),
                },
            },
            handoff(None),
        ]);
        let valid = def.validate().unwrap();
        let normal = valid.to_definition();
        assert_eq!(
            normal.steps[1],
            ask("team", "Which team?", &["Sales", "Support"])
        );
        assert_eq!(normal.validate().unwrap(), valid);
    }

    #[test]
    fn definitions_read_from_json_with_defaults_and_refuse_unknown_fields() {
        let json = r#"{
            "name": "Sales",
            "steps": [
                {"type": "message", "content": {"type": "text", "text": "Hi"}},
                {"type": "message", "content": {"type": "meeting_link", "url": "https://zoom.us/j/1"}},
                {"type": "question", "key": "name", "text": "Your name?"},
                {"type": "handoff"}
            ]
        }"#;
        let def: FlowDefinition = serde_json::from_str(json).unwrap();
        assert_eq!(def.steps[2], ask("name", "Your name?", &[]));
        assert_eq!(def.steps[3], handoff(None));
        let back: FlowDefinition =
            serde_json::from_str(&serde_json::to_string(&def).unwrap()).unwrap();
        assert_eq!(back, def);

        let typo = r#"{"name": "S", "steps": [
            {"type": "question", "key": "k", "text": "Q?", "choice": ["a"]}
        ]}"#;
        assert!(serde_json::from_str::<FlowDefinition>(typo).is_err());
        let fixed = typo.replace("\"choice\"", "\"choices\"");
        assert!(serde_json::from_str::<FlowDefinition>(&fixed).is_ok());
    }

    // --- engine -----------------------------------------------------------

    #[test]
    fn start_posts_up_to_and_including_the_first_question() {
        let flow = sales_flow();
        let (run, outputs) = start(&flow, "flow-1", 3);
        assert_eq!(
            posted_texts(&outputs),
            ["Hi! Welcome to Acme.", "What is your name?"]
        );
        assert!(handoffs(&outputs).is_empty());
        assert_eq!(run.flow_id, "flow-1");
        assert_eq!(run.version, 3);
        assert_eq!(run.step, 1);
        assert_eq!(run.status, RunStatus::AwaitingAnswer);
        assert!(run.answers.is_empty());
    }

    #[test]
    fn an_answer_is_recorded_and_the_bot_asks_the_next_question() {
        let flow = sales_flow();
        let (run, _) = start(&flow, "f", 1);
        let (run, outputs) = on_visitor_message(&run, &flow, "  Dana \n");
        assert_eq!(run.answer("name"), Some("Dana"));
        assert_eq!(run.step, 2);
        assert_eq!(run.status, RunStatus::AwaitingAnswer);
        let [
            BotOutput::Post {
                content: MessageContent::Text { text },
                quick_replies,
            },
        ] = outputs.as_slice()
        else {
            panic!("expected one question: {outputs:?}");
        };
        assert_eq!(text.as_str(), "Which team?");
        let replies: Vec<&str> = quick_replies.iter().map(Label::as_str).collect();
        assert_eq!(replies, ["Sales", "Support"]);
    }

    #[test]
    fn a_choice_typed_in_another_case_is_recorded_in_the_choices_spelling() {
        let flow = sales_flow();
        let (run, _) = start(&flow, "f", 1);
        let (run, _) = on_visitor_message(&run, &flow, "Dana");
        let (run, _) = on_visitor_message(&run, &flow, "  sUPPORT ");
        assert_eq!(run.answer("team"), Some("Support"));
    }

    #[test]
    fn free_text_is_accepted_for_a_question_with_choices() {
        let flow = sales_flow();
        let (run, _) = start(&flow, "f", 1);
        let (run, _) = on_visitor_message(&run, &flow, "Dana");
        let (run, _) = on_visitor_message(&run, &flow, "Both, really");
        assert_eq!(run.answer("team"), Some("Both, really"));
        assert_eq!(run.status, RunStatus::HandedOff);
    }

    #[test]
    fn the_handoff_tells_the_agents_with_the_answers() {
        let flow = sales_flow();
        let (run, _) = start(&flow, "f", 1);
        let (run, _) = on_visitor_message(&run, &flow, "Dana");
        let (run, outputs) = on_visitor_message(&run, &flow, "sales");
        assert_eq!(run.status, RunStatus::HandedOff);
        assert_eq!(run.step, flow.steps().len());
        // Meeting link, visitor-facing handoff text, then the agents' note.
        assert_eq!(outputs.len(), 3);
        assert!(matches!(
            &outputs[0],
            BotOutput::Post {
                content: MessageContent::MeetingLink { .. },
                ..
            }
        ));
        assert_eq!(posted_texts(&outputs), ["Connecting you to an agent…"]);
        let [(note, answers)] = handoffs(&outputs)[..] else {
            panic!("expected one handoff: {outputs:?}");
        };
        assert_eq!(
            note,
            "The visitor is waiting for an agent. name: Dana; team: Sales"
        );
        assert_eq!(answers, run.answers.as_slice());
        assert!(matches!(outputs[2], BotOutput::Handoff { .. }));
    }

    #[test]
    fn the_handoff_note_keeps_long_answers_to_one_short_line() {
        let def = flow(vec![ask("need", "What do you need?", &[]), handoff(None)]);
        let flow = def.validate().unwrap();
        let (run, _) = start(&flow, "f", 1);
        let long = format!("line one\nline two {}", "x".repeat(500));
        let (run, outputs) = on_visitor_message(&run, &flow, &long);
        assert_eq!(run.answer("need"), Some(long.as_str()));
        let [(note, answers)] = handoffs(&outputs)[..] else {
            panic!("expected one handoff: {outputs:?}");
        };
        let quoted = note
            .strip_prefix("The visitor is waiting for an agent. need: ")
            .unwrap();
        assert!(quoted.starts_with("line one line two x"));
        assert_eq!(quoted.chars().count(), MAX_NOTE_ANSWER_CHARS);
        assert!(quoted.ends_with('…'));
        assert_eq!(answers[0].value, long);
    }

    #[test]
    fn a_flow_of_messages_and_a_handoff_runs_to_the_end_on_start() {
        let def = flow(vec![
            say("Hi"),
            say("An agent will be with you"),
            handoff(None),
        ]);
        let flow = def.validate().unwrap();
        let (run, outputs) = start(&flow, "f", 1);
        assert_eq!(posted_texts(&outputs), ["Hi", "An agent will be with you"]);
        assert_eq!(
            handoffs(&outputs),
            [("The visitor is waiting for an agent.", &[][..])]
        );
        assert_eq!(run.status, RunStatus::HandedOff);
        assert_eq!(run.step, 3);
    }

    #[test]
    fn a_flow_without_a_handoff_completes_quietly_after_the_last_answer() {
        let def = flow(vec![ask("name", "Name?", &[]), say("Thanks!")]);
        let flow = def.validate().unwrap();
        let (run, _) = start(&flow, "f", 1);
        let (run, outputs) = on_visitor_message(&run, &flow, "Dana");
        assert_eq!(posted_texts(&outputs), ["Thanks!"]);
        assert!(handoffs(&outputs).is_empty());
        assert_eq!(run.status, RunStatus::Completed);
        assert_eq!(run.step, 2);
        let (after, outputs) = on_visitor_message(&run, &flow, "hello?");
        assert_eq!(after, run);
        assert!(outputs.is_empty());
    }

    #[test]
    fn restart_replays_from_step_one_with_no_answers() {
        let flow = sales_flow();
        let (first, opening) = start(&flow, "f", 2);
        let (run, _) = on_visitor_message(&first, &flow, "Dana");
        let (run, _) = on_visitor_message(&run, &flow, "Sales");
        assert_eq!(run.status, RunStatus::HandedOff);
        let (again, outputs) = restart(&flow, &run.flow_id, run.version);
        assert_eq!(again, first);
        assert!(again.answers.is_empty());
        assert_eq!(again.step, 1);
        assert_eq!(outputs, opening);
    }

    #[test]
    fn an_agent_message_stops_the_flow_and_later_visitor_messages_do_nothing() {
        let flow = sales_flow();
        let (run, _) = start(&flow, "f", 1);
        let stopped = on_agent_action(&run);
        assert_eq!(stopped.status, RunStatus::Stopped);
        assert_eq!(stopped.step, 1);
        let (after, outputs) = on_visitor_message(&stopped, &flow, "Dana");
        assert_eq!(after, stopped);
        assert!(outputs.is_empty());
    }

    #[test]
    fn messages_after_a_handoff_do_nothing() {
        let flow = sales_flow();
        let (run, _) = start(&flow, "f", 1);
        let (run, _) = on_visitor_message(&run, &flow, "Dana");
        let (run, _) = on_visitor_message(&run, &flow, "Sales");
        let (after, outputs) = on_visitor_message(&run, &flow, "anyone there?");
        assert_eq!(after, run);
        assert!(outputs.is_empty());
        // The record still says the flow handed over.
        assert_eq!(on_agent_action(&run).status, RunStatus::HandedOff);
    }

    #[test]
    fn a_blank_message_is_not_an_answer() {
        let flow = sales_flow();
        let (run, _) = start(&flow, "f", 1);
        let (after, outputs) = on_visitor_message(&run, &flow, " \n ");
        assert_eq!(after, run);
        assert!(outputs.is_empty());
    }

    #[test]
    fn a_run_given_another_flow_does_nothing() {
        let flow = sales_flow();
        let (run, _) = start(&flow, "f", 1);
        let other = flow_of_messages();
        let (after, outputs) = on_visitor_message(&run, &other, "Dana");
        assert_eq!(after, run);
        assert!(outputs.is_empty());
    }

    fn flow_of_messages() -> ValidFlow {
        flow(vec![say("a"), say("b")]).validate().unwrap()
    }

    #[test]
    fn runs_and_statuses_round_trip_through_storage() {
        let flow = sales_flow();
        let (run, _) = start(&flow, "f", 1);
        let (run, _) = on_visitor_message(&run, &flow, "Dana");
        let json = serde_json::to_string(&run).unwrap();
        assert_eq!(serde_json::from_str::<FlowRun>(&json).unwrap(), run);
        for status in [
            RunStatus::AwaitingAnswer,
            RunStatus::HandedOff,
            RunStatus::Completed,
            RunStatus::Stopped,
        ] {
            assert_eq!(RunStatus::from_stored(status.as_str()), Some(status));
        }
        assert_eq!(RunStatus::from_stored("running"), None);
    }

    #[test]
    fn a_long_answer_is_kept_to_the_answer_limit() {
        let question = ValidQuestion {
            key: QuestionKey::parse("about").unwrap(),
            text: MessageText::parse("Tell us about you").unwrap(),
            choices: Vec::new(),
        };
        let long = "é".repeat(MAX_ANSWER_CHARS + 50);
        assert_eq!(
            question.recorded_answer(&long).chars().count(),
            MAX_ANSWER_CHARS
        );
        assert_eq!(question.recorded_answer("  short  "), "short");
    }
}
