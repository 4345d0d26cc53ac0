// What the widget and the Inbox share: a client of the public API over
// grpc-web, configured from the page's URL fragment (never sent to a
// server), and how a message reads.
import { ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import {
  AuthorKind,
  ConversationStatus,
  type Message,
  TransactionalKind,
} from "./gen/conversations/v1/conversation_pb";
import {
  ConversationService,
  type WatchEventsResponse,
} from "./gen/conversations/v1/conversation_service_pb";
import type { Event } from "./gen/conversations/v1/event_pb";

export type Conversations = Client<typeof ConversationService>;

/// The page's element with this id.
export const byId = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

/// Shows `text` in the page's #problem line, or hides it when undefined.
export function tell(text: string | undefined) {
  const problem = byId<HTMLParagraphElement>("problem");
  problem.hidden = !text;
  problem.textContent = text ?? "";
}

/// `#server=…&token=…` (or `key=…`): the fragment stays in the browser.
export function settings(): URLSearchParams {
  return new URLSearchParams(location.hash.slice(1));
}

/// A client of the server at `server` (its own origin when empty) that
/// sends `bearer` (a visitor session token, or an agent key) on every call.
export function connect(server: string | null, bearer: string): Conversations {
  const authorize: Interceptor = (next) => (request) => {
    request.header.set("authorization", `Bearer ${bearer}`);
    return next(request);
  };
  const transport = createGrpcWebTransport({
    baseUrl: server || location.origin,
    interceptors: [authorize],
  });
  return createClient(ConversationService, transport);
}

export const STATUS_NAMES: Record<ConversationStatus, string> = {
  [ConversationStatus.UNSPECIFIED]: "unknown",
  [ConversationStatus.OPEN]: "Open",
  [ConversationStatus.PENDING]: "Pending",
  [ConversationStatus.CLOSED]: "Closed",
};

/// Who wrote it, as the thread shows it.
export function authorOf(message: Message): string {
  const author = message.author;
  switch (author?.kind) {
    case AuthorKind.VISITOR:
      return "You";
    case AuthorKind.BOT:
      return author.displayName || "Bot";
    case AuthorKind.SYSTEM:
      return "System";
    case AuthorKind.AGENT:
      return author.displayName || author.id;
    default:
      return "";
  }
}

/// The message as one line of text.
export function textOf(message: Message): string {
  const content = message.content;
  switch (content.case) {
    case "text":
      return content.value;
    case "meetingLink":
      return `${content.value.provider || "Meeting"}: ${content.value.url}`;
    case "appointment": {
      const start = content.value.startTime ? timestampDate(content.value.startTime) : undefined;
      return `Appointment: ${content.value.title} ${start?.toLocaleString() ?? ""}`.trim();
    }
    case "transactional":
      return content.value.text || TRANSACTIONAL[content.value.kind] || "";
    default:
      return "";
  }
}

const TRANSACTIONAL: Partial<Record<TransactionalKind, string>> = {
  [TransactionalKind.UNSPECIFIED]: "",
  [TransactionalKind.CONVERSATION_CLOSED]: "The conversation was closed.",
  [TransactionalKind.CONVERSATION_MARKED_PENDING]: "The conversation is pending.",
  [TransactionalKind.CONVERSATION_REOPENED]: "The conversation was reopened.",
};

/// Whether the message is a status change's transactional message.
export function isTransactional(message: Message): boolean {
  return message.content.case === "transactional";
}

/// Reads a WatchEvents stream for ever: each event goes to `apply` once,
/// in order. A broken stream is resumed after the last sequence seen, so
/// nothing is missed or repeated; `stop` says which refusals end it (an
/// expired session, say), with the refusal.
export async function follow(
  open: (afterSequence: bigint) => AsyncIterable<WatchEventsResponse>,
  apply: (event: Event) => void,
  stop: (refusal: ConnectError) => boolean,
): Promise<void> {
  let after = 0n;
  for (;;) {
    try {
      for await (const response of open(after)) {
        const item = response.item;
        if (item.case === "event") {
          after = item.value.sequence;
          apply(item.value);
        } else if (item.case === "checkpoint") {
          after = item.value.sequence;
        }
      }
    } catch (error) {
      if (stop(ConnectError.from(error))) {
        return;
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}
