// The sales team's Inbox: Open / Pending / Closed tabs with their counts, a
// thread with its transactional messages and internal notes, and the status
// buttons, all kept live by the workspace's WatchEvents stream. It holds an
// agent key: a demo of the API from a browser, not how a real Inbox should
// keep its credentials (its own backend would hold them).
import { ConnectError } from "@connectrpc/connect";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import {
  Audience,
  AuthorKind,
  Channel,
  type Conversation,
  ConversationStatus,
  type Message,
} from "./gen/conversations/v1/conversation_pb";
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
const key = config.get("key") ?? "";
const client = connect(config.get("server"), key);
const agent = {
  agentId: config.get("agent_id") || "agent-dana",
  displayName: config.get("agent_name") || "Dana",
  channel: Channel.INBOX,
};

const TABS: Record<string, ConversationStatus> = {
  open: ConversationStatus.OPEN,
  pending: ConversationStatus.PENDING,
  closed: ConversationStatus.CLOSED,
};

const list = byId<HTMLUListElement>("conversations");
const thread = byId<HTMLOListElement>("thread");
const visitor = byId<HTMLElement>("visitor");
const threadStatus = byId<HTMLSpanElement>("thread-status");
const buttons = {
  pending: byId<HTMLButtonElement>("pending"),
  close: byId<HTMLButtonElement>("close"),
  reopen: byId<HTMLButtonElement>("reopen"),
};
const composer = byId<HTMLFormElement>("composer");
const reply = byId<HTMLInputElement>("text");
const note = byId<HTMLInputElement>("note");
const send = byId<HTMLButtonElement>("send");

let tab = "open";
let selected: string | undefined;

function showTabs() {
  for (const button of document.querySelectorAll<HTMLButtonElement>(".tabs button")) {
    button.setAttribute("aria-selected", String(button.dataset.status === tab));
  }
}

async function refreshList() {
  const page = await client.listConversations({ statuses: [TABS[tab]], pageSize: 100 });
  const counts = page.statusCounts;
  byId("count-open").textContent = String(counts?.open ?? 0n);
  byId("count-pending").textContent = String(counts?.pending ?? 0n);
  byId("count-closed").textContent = String(counts?.closed ?? 0n);
  list.replaceChildren(...page.conversations.map(entry));
}

function entry(conversation: Conversation): HTMLLIElement {
  const item = document.createElement("li");
  item.dataset.testid = "conversation";
  item.dataset.conversation = conversation.conversationId;
  item.setAttribute("aria-current", String(conversation.conversationId === selected));
  const updated = conversation.updateTime ? timestampDate(conversation.updateTime) : undefined;
  item.append(conversation.visitorId);
  const detail = document.createElement("small");
  detail.textContent = `${conversation.messageCount} messages · ${updated?.toLocaleTimeString() ?? ""}`;
  item.append(detail);
  item.addEventListener("click", () => {
    selected = conversation.conversationId;
    void refresh();
  });
  return item;
}

function line(message: Message): HTMLLIElement {
  const item = document.createElement("li");
  item.dataset.testid = "message";
  if (isTransactional(message)) {
    item.className = "transactional";
    item.dataset.kind = "transactional";
  } else {
    if (message.audience === Audience.AGENTS) {
      item.className = "note";
      item.dataset.kind = "note";
    } else if (message.author?.kind === AuthorKind.AGENT) {
      item.className = "mine";
    }
    const who = document.createElement("span");
    who.className = "who";
    const author = authorOf(message);
    who.textContent = message.author?.kind === AuthorKind.VISITOR ? "Visitor" : author;
    if (message.audience === Audience.AGENTS) {
      who.textContent += " · internal note";
    }
    item.append(who);
  }
  item.append(textOf(message));
  return item;
}

async function refreshThread() {
  const enabled = Boolean(selected);
  reply.disabled = send.disabled = !enabled;
  if (!selected) {
    return;
  }
  const conversationId = selected;
  const [{ conversation }, { messages }] = await Promise.all([
    client.getConversation({ conversationId }),
    client.listMessages({ conversationId, pageSize: 500 }),
  ]);
  if (!conversation || conversationId !== selected) {
    return;
  }
  visitor.textContent = conversation.visitorId;
  const name = STATUS_NAMES[conversation.status];
  threadStatus.textContent = name;
  threadStatus.dataset.status = name.toLowerCase();
  buttons.pending.disabled = conversation.status === ConversationStatus.PENDING;
  buttons.close.disabled = conversation.status === ConversationStatus.CLOSED;
  buttons.reopen.disabled = conversation.status !== ConversationStatus.CLOSED;
  thread.replaceChildren(...messages.map(line));
  thread.scrollTop = thread.scrollHeight;
}

// Events come in bursts (a status change and its message): one refresh
// for each burst.
let queued: Promise<void> | undefined;
function refresh(): Promise<void> {
  queued ??= new Promise<void>((resolve) => setTimeout(resolve, 50))
    .then(() => {
      queued = undefined;
      return Promise.all([refreshList(), refreshThread()]);
    })
    .then(() => tell(undefined))
    .catch((error) => tell(ConnectError.from(error).rawMessage));
  return queued;
}

async function act(run: () => Promise<unknown>) {
  try {
    await run();
  } catch (error) {
    tell(ConnectError.from(error).rawMessage);
  }
}

for (const button of document.querySelectorAll<HTMLButtonElement>(".tabs button")) {
  button.addEventListener("click", () => {
    tab = button.dataset.status ?? "open";
    showTabs();
    void refresh();
  });
}
buttons.pending.addEventListener("click", () =>
  act(() => client.markConversationPending({ conversationId: selected, agent })),
);
buttons.close.addEventListener("click", () =>
  act(() => client.closeConversation({ conversationId: selected, agent })),
);
buttons.reopen.addEventListener("click", () =>
  act(() => client.reopenConversation({ conversationId: selected, agent })),
);
composer.addEventListener("submit", (submitted) => {
  submitted.preventDefault();
  const text = reply.value.trim();
  if (!text || !selected) {
    return;
  }
  void act(async () => {
    await client.sendMessage({
      conversationId: selected,
      sender: { case: "agent", value: agent },
      content: { case: "text", value: text },
      audience: note.checked ? Audience.AGENTS : Audience.EVERYONE,
    });
    reply.value = "";
    note.checked = false;
  });
});

async function main() {
  showTabs();
  if (!key) {
    tell("No agent key: open this page with #key=… (`conversations demo` prints a link).");
    return;
  }
  await refresh();
  // The whole workspace's feed, from now on: every change refreshes what
  // is on screen, without reloading.
  const head = await client.listEvents({ pageSize: 1, afterSequence: 0n });
  let start = head.headSequence;
  await follow(
    (afterSequence) =>
      client.watchEvents({ afterSequence: afterSequence > start ? afterSequence : start }),
    (event) => {
      start = event.sequence;
      void refresh();
    },
    (refusal) => {
      tell(refusal.rawMessage);
      return false;
    },
  );
}

main().catch((error) => tell(ConnectError.from(error).rawMessage));
