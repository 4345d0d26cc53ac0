-- Visitor sessions (issue #12); the same tables as migrations/sqlite/0006: browsers hold a signed token instead of a
-- key. The token carries its own claims, so only the signing secret and the
-- sessions revoked before they expire are stored.

-- The HMAC key that signs session tokens: one row, made by the first server
-- that needs it. Whoever can read it can mint sessions: it is as secret as
-- the database.
CREATE TABLE session_secrets (
    secret_id   SMALLINT PRIMARY KEY CHECK (secret_id = 1),
    secret      BYTEA   NOT NULL,
    create_time BIGINT  NOT NULL
);

-- Sessions revoked before their expiry; a row may go once the session has
-- expired anyway.
CREATE TABLE revoked_sessions (
    session_id   TEXT    NOT NULL,
    workspace_id BIGINT  NOT NULL REFERENCES workspaces (workspace_id),
    expire_time  BIGINT  NOT NULL,
    revoke_time  BIGINT  NOT NULL,
    PRIMARY KEY (workspace_id, session_id)
);
-- Servers poll it for recent revocations.
CREATE INDEX revoked_sessions_by_revoke_time ON revoked_sessions (revoke_time);
