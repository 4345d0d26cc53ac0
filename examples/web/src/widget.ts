// The visitor's chat widget: one conversation, live from WatchEvents, with
// a visitor session token (never a key) from the site's backend.
import { Code, ConnectError } from "@connectrpc/connect";
import { AuthorKind, ConversationStatus, type Message } from "./gen/conversations/v1/conversation_pb";
import type { Event } from "./gen/conversations/v1/event_pb";
import {
  authorOf,
  byId,
  connect,
  follow,
  isTransactional,
  settings,
  STATUS_NAMES,
  tell,
  textOf,
} from "./client";

const config = settings();
const token = config.get("token") ?? "";
const client = connect(config.get("server"), token);

const thread = byId<HTMLOListElement>("thread");
const badge = byId<HTMLSpanElement>("status");
const closedNotice = byId<HTMLDivElement>("closed");
const composer = byId<HTMLFormElement>("composer");
const input = byId<HTMLInputElement>("text");
const send = byId<HTMLButtonElement>("send");
const restart = byId<HTMLButtonElement>("restart");

let conversationId = "";
const shown = new Set<string>();

function show(status: ConversationStatus) {
  const name = STATUS_NAMES[status];
  badge.textContent = name;
  badge.dataset.status = name.toLowerCase();
  const closed = status === ConversationStatus.CLOSED;
  // A closed conversation takes no visitor messages: the notice and its
  // Restart button take the composer's place.
  closedNotice.hidden = !closed;
  composer.hidden = closed;
  input.disabled = closed;
  send.disabled = closed;
}

function render(message: Message) {
  if (shown.has(message.messageId)) {
    return;
  }
  shown.add(message.messageId);
  const item = document.createElement("li");
  item.dataset.testid = "message";
  if (isTransactional(message)) {
    item.className = "transactional";
    item.dataset.kind = "transactional";
  } else {
    if (message.author?.kind === AuthorKind.VISITOR) {
      item.className = "mine";
    }
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = authorOf(message);
    item.append(who);
  }
  item.append(textOf(message));
  thread.append(item);
  thread.scrollTop = thread.scrollHeight;
}

function apply(event: Event) {
  const payload = event.payload;
  switch (payload.case) {
    case "conversationStarted":
      if (payload.value.conversation) {
        show(payload.value.conversation.status);
      }
      break;
    case "statusChanged":
      show(payload.value.toStatus);
      break;
    case "messagePosted":
      if (payload.value.message) {
        render(payload.value.message);
      }
      break;
  }
}

/// Refusals that end the stream for good: the session is over, or the
/// conversation is not this visitor's.
function fatal(refusal: ConnectError): boolean {
  const ends = [Code.Unauthenticated, Code.PermissionDenied, Code.NotFound].includes(refusal.code);
  tell(ends ? refusal.rawMessage : "Reconnecting…");
  return ends;
}

composer.addEventListener("submit", async (submitted) => {
  submitted.preventDefault();
  const text = input.value.trim();
  if (!text || !conversationId) {
    return;
  }
  send.disabled = true;
  try {
    await client.sendMessage({ conversationId, content: { case: "text", value: text } });
    input.value = "";
    tell(undefined);
  } catch (error) {
    tell(ConnectError.from(error).rawMessage);
  } finally {
    send.disabled = input.disabled;
  }
  input.focus();
});

restart.addEventListener("click", async () => {
  restart.disabled = true;
  try {
    // Re-opens the conversation; the bot flow starts again from the top.
    await client.restartConversation({ conversationId });
    tell(undefined);
  } catch (error) {
    tell(ConnectError.from(error).rawMessage);
  } finally {
    restart.disabled = false;
  }
});

async function main() {
  if (!token) {
    tell("No visitor session: open this page with #token=… (`conversations demo` prints a link).");
    show(ConversationStatus.CLOSED);
    restart.disabled = true;
    return;
  }
  // The visitor's latest conversation, or a new one.
  const listed = await client.listConversations({ pageSize: 1 });
  const conversation =
    listed.conversations[0] ?? (await client.startConversation({})).conversation;
  if (!conversation) {
    return;
  }
  conversationId = conversation.conversationId;
  document.body.dataset.conversation = conversationId;
  show(conversation.status);
  await follow(
    (afterSequence) => client.watchEvents({ conversationId, afterSequence }),
    apply,
    fatal,
  );
}

main().catch((error) => tell(ConnectError.from(error).rawMessage));
