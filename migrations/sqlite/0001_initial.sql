-- Workspaces (tenants), their API keys, conversations, their threads, the
-- durable event feed and the idempotency records of mutations.
-- Times are microseconds since the Unix epoch (UTC).

CREATE TABLE workspaces (
    workspace_id INTEGER PRIMARY KEY,
    name         TEXT    NOT NULL UNIQUE,
    create_time  INTEGER NOT NULL
);

-- Keys are stored only as SHA-256 hashes of their secret part.
CREATE TABLE api_keys (
    key_id       TEXT    PRIMARY KEY,
    workspace_id INTEGER NOT NULL REFERENCES workspaces (workspace_id),
    role         TEXT    NOT NULL CHECK (role IN ('agent', 'visitor')),
    secret_hash  BLOB    NOT NULL,
    create_time  INTEGER NOT NULL,
    revoke_time  INTEGER
);

CREATE TABLE conversations (
    conversation_id          TEXT    PRIMARY KEY,
    workspace_id             INTEGER NOT NULL REFERENCES workspaces (workspace_id),
    visitor_id               TEXT    NOT NULL,
    status                   TEXT    NOT NULL CHECK (status IN ('open', 'pending', 'closed')),
    assignee_agent_id        TEXT,
    assignee_display_name    TEXT,
    assignee_channel         TEXT,
    create_time              INTEGER NOT NULL,
    update_time              INTEGER NOT NULL,
    status_change_time       INTEGER NOT NULL,
    close_time               INTEGER,
    version                  INTEGER NOT NULL,
    message_count            INTEGER NOT NULL,
    everyone_message_count   INTEGER NOT NULL
);
-- The Inbox list: newest update first, then id; and its status tabs.
CREATE INDEX conversations_by_update ON conversations (workspace_id, update_time DESC, conversation_id DESC);
CREATE INDEX conversations_by_status ON conversations (workspace_id, status, update_time DESC, conversation_id DESC);
CREATE INDEX conversations_by_visitor ON conversations (workspace_id, visitor_id, update_time DESC);
CREATE INDEX conversations_by_assignee ON conversations (workspace_id, assignee_agent_id, update_time DESC);

-- The thread. `content` is the JSON of the domain's MessageContent.
CREATE TABLE messages (
    message_id          TEXT    PRIMARY KEY,
    conversation_id     TEXT    NOT NULL REFERENCES conversations (conversation_id),
    position            INTEGER NOT NULL,
    author_kind         TEXT    NOT NULL,
    author_id           TEXT    NOT NULL,
    author_display_name TEXT    NOT NULL,
    author_channel      TEXT    NOT NULL,
    audience            TEXT    NOT NULL CHECK (audience IN ('everyone', 'agents')),
    create_time         INTEGER NOT NULL,
    content             TEXT    NOT NULL,
    UNIQUE (conversation_id, position)
);

-- The durable feed. `sequence` is global and strictly increasing (AUTOINCREMENT
-- never reuses a value, even after the newest rows are deleted). Rows are
-- written in the same transaction as the change they describe, so a reader
-- that scans by sequence sees only committed changes, whole. `audience` lets a
-- visitor-scoped reader skip agent-only events with an index; `payload` is the
-- JSON of the domain's EventPayload.
CREATE TABLE events (
    sequence        INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        TEXT    NOT NULL UNIQUE,
    workspace_id    INTEGER NOT NULL,
    conversation_id TEXT    NOT NULL,
    kind            TEXT    NOT NULL CHECK (kind IN ('conversation_started', 'status_changed', 'message_posted')),
    audience        TEXT    NOT NULL CHECK (audience IN ('everyone', 'agents')),
    create_time     INTEGER NOT NULL,
    payload         TEXT    NOT NULL
);
CREATE INDEX events_by_workspace ON events (workspace_id, sequence);
CREATE INDEX events_by_conversation ON events (conversation_id, sequence);

-- A mutation's first response, replayed for a retry with the same request id.
CREATE TABLE idempotency_records (
    workspace_id  INTEGER NOT NULL,
    request_id    TEXT    NOT NULL,
    method        TEXT    NOT NULL,
    fingerprint   BLOB    NOT NULL,
    response      TEXT    NOT NULL,
    create_time   INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, request_id)
);
CREATE INDEX idempotency_records_by_time ON idempotency_records (create_time);
