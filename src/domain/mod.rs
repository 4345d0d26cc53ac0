//! Pure domain rules: the conversation, its status table, messages and the
//! sentences they say, validated values and API key rules. No I/O, no proto
//! types, no SQL: everything here is decided from its arguments alone.

pub mod conversation;
pub mod credentials;
pub mod flow;
pub mod lifecycle;
pub mod message;
pub mod scope;
pub mod session;
pub mod spoken;
pub mod status;
mod tagged;
pub mod timers;
pub mod values;

pub use conversation::{Conversation, Status, WorkspaceId};
pub use lifecycle::{Change, Command, DecideError, EventPayload, Refusal};
pub use message::{Audience, Author, Message, MessageContent};
pub use values::Micros;
