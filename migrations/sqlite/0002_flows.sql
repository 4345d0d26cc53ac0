-- Conversation flows (the bot playbook) and the `admin` key role that manages them.

-- SQLite cannot change a CHECK constraint in place: rebuild api_keys to allow
-- the admin role, keeping every key.
CREATE TABLE api_keys_new (
    key_id       TEXT    PRIMARY KEY,
    workspace_id INTEGER NOT NULL REFERENCES workspaces (workspace_id),
    role         TEXT    NOT NULL CHECK (role IN ('agent', 'visitor', 'admin')),
    secret_hash  BLOB    NOT NULL,
    create_time  INTEGER NOT NULL,
    revoke_time  INTEGER
);
INSERT INTO api_keys_new (key_id, workspace_id, role, secret_hash, create_time, revoke_time)
    SELECT key_id, workspace_id, role, secret_hash, create_time, revoke_time FROM api_keys;
DROP TABLE api_keys;
ALTER TABLE api_keys_new RENAME TO api_keys;

-- Every version of every flow is kept: conversations run the version they
-- started with. `definition` is the JSON of the domain's FlowDefinition.
CREATE TABLE flows (
    flow_id      TEXT    NOT NULL,
    version      INTEGER NOT NULL,
    workspace_id INTEGER NOT NULL REFERENCES workspaces (workspace_id),
    name         TEXT    NOT NULL,
    definition   TEXT    NOT NULL,
    create_time  INTEGER NOT NULL,
    PRIMARY KEY (flow_id, version)
);
CREATE INDEX flows_by_workspace ON flows (workspace_id, flow_id, version DESC);

-- The flow new conversations of the workspace run when they name none.
ALTER TABLE workspaces ADD COLUMN default_flow_id TEXT;

-- The conversation's current flow run: JSON of the domain's FlowRun.
ALTER TABLE conversations ADD COLUMN flow_run TEXT;

-- A bot question's quick replies: JSON array of strings, NULL when none.
ALTER TABLE messages ADD COLUMN quick_replies TEXT;
