//! Validated value types. Each `parse` states the rule once; the gRPC layer
//! turns a refusal into a field violation naming the request field.

use serde::{Deserialize, Serialize};

/// Longest id a caller may give (visitor, agent, conversation ids).
pub const MAX_ID_CHARS: usize = 128;
/// Longest `request_id`.
pub const MAX_REQUEST_ID_CHARS: usize = 64;
/// Longest display name.
pub const MAX_DISPLAY_NAME_CHARS: usize = 128;
/// Largest text message, in bytes of UTF-8.
pub const MAX_TEXT_BYTES: usize = 8 * 1024;
/// Longest URL.
pub const MAX_URL_CHARS: usize = 2048;
/// Longest meeting provider name.
pub const MAX_PROVIDER_CHARS: usize = 64;
/// Longest appointment title.
pub const MAX_TITLE_CHARS: usize = 200;
/// Longest appointment, in nanoseconds (24 hours).
pub const MAX_APPOINTMENT_NANOS: i64 = 24 * 3600 * 1_000_000_000;

/// Microseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Micros(pub i64);

/// Why a value was refused; the text completes "<field> ...".
pub type Invalid = String;

fn check_identifier(value: &str, max_chars: usize) -> Result<(), Invalid> {
    if value.is_empty() {
        return Err("is required".into());
    }
    let chars = value.chars().count();
    if chars > max_chars {
        return Err(format!(
            "must be at most {max_chars} characters (got {chars})"
        ));
    }
    if value.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    if value.trim() != value {
        return Err("must not start or end with white space".into());
    }
    Ok(())
}

macro_rules! identifier {
    ($(#[$doc:meta])* $name:ident, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Accepts 1 to the maximum characters, no control characters and
            /// no surrounding white space.
            pub fn parse(value: &str) -> Result<Self, Invalid> {
                check_identifier(value, $max).map(|()| Self(value.to_owned()))
            }

            /// The id as given.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Wraps a value read back from storage, where it was validated on
            /// the way in.
            pub fn from_trusted(value: String) -> Self {
                Self(value)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

identifier!(
    /// A website visitor, as the caller's system names them.
    VisitorId,
    MAX_ID_CHARS
);
identifier!(
    /// A sales agent, as the caller's system names them.
    AgentId,
    MAX_ID_CHARS
);
identifier!(
    /// A conversation id. The server makes them; a caller's may be unknown.
    ConversationId,
    MAX_ID_CHARS
);
identifier!(
    /// A message id, made by the server.
    MessageId,
    MAX_ID_CHARS
);
identifier!(
    /// A flow id, made by the server; a caller's may be unknown.
    FlowId,
    MAX_ID_CHARS
);
identifier!(
    /// The caller's key that makes a mutation safe to retry.
    RequestId,
    MAX_REQUEST_ID_CHARS
);

/// A name shown to people; may be empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DisplayName(String);

impl DisplayName {
    /// Accepts up to [`MAX_DISPLAY_NAME_CHARS`] characters without control
    /// characters; surrounding white space is trimmed.
    pub fn parse(value: &str) -> Result<Self, Invalid> {
        let value = value.trim();
        let chars = value.chars().count();
        if chars > MAX_DISPLAY_NAME_CHARS {
            return Err(format!(
                "must be at most {MAX_DISPLAY_NAME_CHARS} characters (got {chars})"
            ));
        }
        if value.chars().any(char::is_control) {
            return Err("must not contain control characters".into());
        }
        Ok(Self(value.to_owned()))
    }

    /// The name; empty when none was given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Wraps a value read back from storage.
    pub fn from_trusted(value: String) -> Self {
        Self(value)
    }
}

/// Where someone acted from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// Not given.
    Unspecified,
    /// The web Inbox.
    Inbox,
    /// Slack.
    Slack,
    /// Microsoft Teams.
    MsTeams,
    /// The visitor's chat widget.
    Widget,
}

impl Channel {
    /// The name used in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::Inbox => "inbox",
            Self::Slack => "slack",
            Self::MsTeams => "ms_teams",
            Self::Widget => "widget",
        }
    }

    /// Reads the storage name back; unknown names read as unspecified.
    pub fn from_stored(value: &str) -> Self {
        match value {
            "inbox" => Self::Inbox,
            "slack" => Self::Slack,
            "ms_teams" => Self::MsTeams,
            "widget" => Self::Widget,
            _ => Self::Unspecified,
        }
    }

    /// How a sentence names the channel: "from Slack".
    pub fn label(self) -> Option<&'static str> {
        match self {
            Self::Unspecified => None,
            Self::Inbox => Some("the Inbox"),
            Self::Slack => Some("Slack"),
            Self::MsTeams => Some("MS Teams"),
            Self::Widget => Some("the widget"),
        }
    }
}

/// An agent acting on a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AgentRef {
    /// Who.
    pub agent_id: AgentId,
    /// The name to show; the id is shown when it is empty.
    pub display_name: DisplayName,
    /// From where.
    pub channel: Channel,
}

impl AgentRef {
    /// The name a sentence uses for this agent.
    pub fn shown_name(&self) -> &str {
        if self.display_name.as_str().is_empty() {
            self.agent_id.as_str()
        } else {
            self.display_name.as_str()
        }
    }
}

/// Message text: 1 byte to 8 KiB, not only white space.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageText(String);

impl MessageText {
    /// Accepts non-blank text of at most [`MAX_TEXT_BYTES`] bytes.
    pub fn parse(value: &str) -> Result<Self, Invalid> {
        if value.trim().is_empty() {
            return Err("must not be empty or only white space".into());
        }
        if value.len() > MAX_TEXT_BYTES {
            return Err(format!(
                "must be at most {MAX_TEXT_BYTES} bytes (got {})",
                value.len()
            ));
        }
        Ok(Self(value.to_owned()))
    }

    /// Wraps a value read back from storage, where it was validated on the
    /// way in.
    pub fn from_trusted(value: String) -> Self {
        Self(value)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An absolute https URL with a host.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HttpsUrl(String);

impl HttpsUrl {
    /// Accepts an absolute `https://` URL with a host, at most
    /// [`MAX_URL_CHARS`] characters.
    pub fn parse(value: &str) -> Result<Self, Invalid> {
        if value.is_empty() {
            return Err("is required".into());
        }
        if value.chars().count() > MAX_URL_CHARS {
            return Err(format!("must be at most {MAX_URL_CHARS} characters"));
        }
        let url = url::Url::parse(value).map_err(|e| format!("is not a valid URL ({e})"))?;
        if url.scheme() != "https" {
            return Err(format!("must be an https URL (got {}:)", url.scheme()));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("must name a host".into());
        }
        Ok(Self(value.to_owned()))
    }

    /// The URL as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A short free-text label (meeting provider, appointment title).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Label(String);

impl Label {
    /// Accepts up to `max_chars` characters without control characters;
    /// surrounding white space is trimmed.
    pub fn parse(value: &str, max_chars: usize) -> Result<Self, Invalid> {
        let value = value.trim();
        if value.chars().count() > max_chars {
            return Err(format!("must be at most {max_chars} characters"));
        }
        if value.chars().any(char::is_control) {
            return Err("must not contain control characters".into());
        }
        Ok(Self(value.to_owned()))
    }

    /// The label; empty when none was given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How long an appointment lasts: more than zero, at most 24 hours.
pub fn check_appointment_duration(nanos: i64) -> Result<(), Invalid> {
    if nanos <= 0 {
        return Err("must be more than zero".into());
    }
    if nanos > MAX_APPOINTMENT_NANOS {
        return Err("must be at most 24 hours".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_refuse_empty_long_and_control_characters() {
        assert!(VisitorId::parse("v-1").is_ok());
        assert!(VisitorId::parse("").is_err());
        assert!(VisitorId::parse(&"x".repeat(MAX_ID_CHARS)).is_ok());
        assert!(VisitorId::parse(&"x".repeat(MAX_ID_CHARS + 1)).is_err());
        assert!(VisitorId::parse("a\nb").is_err());
        assert!(VisitorId::parse(" a").is_err());
        assert!(RequestId::parse(&"r".repeat(65)).is_err());
    }

    #[test]
    fn text_is_bounded_in_bytes_and_must_say_something() {
        assert!(MessageText::parse("hi").is_ok());
        assert!(MessageText::parse("   \n").is_err());
        assert!(MessageText::parse(&"é".repeat(MAX_TEXT_BYTES / 2)).is_ok());
        assert!(MessageText::parse(&"é".repeat(MAX_TEXT_BYTES / 2 + 1)).is_err());
    }

    #[test]
    fn urls_must_be_https_with_a_host() {
        assert!(HttpsUrl::parse("https://zoom.us/j/123").is_ok());
        assert!(HttpsUrl::parse("http://zoom.us/j/123").is_err());
        assert!(HttpsUrl::parse("javascript:alert(1)").is_err());
        assert!(HttpsUrl::parse("zoom.us/j/1").is_err());
        assert!(HttpsUrl::parse("").is_err());
    }

    #[test]
    fn agent_without_display_name_is_shown_by_id() {
        let agent = AgentRef {
            agent_id: AgentId::parse("a-7").unwrap(),
            display_name: DisplayName::default(),
            channel: Channel::Inbox,
        };
        assert_eq!(agent.shown_name(), "a-7");
    }
}
