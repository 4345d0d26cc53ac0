-- Ownership, snooze, auto-close and their durable timers (issue #10).
--
-- conversations.snooze_end_time: when a snoozed PENDING conversation goes
--   back to OPEN by itself (NULL unless snoozed).
-- conversations.due_time: the next time a timer acts on the conversation
--   (its snooze end, or its update_time plus the workspace's auto-close
--   time), NULL when none. Written with every change of the conversation,
--   and recomputed for the workspace when its settings change.
-- conversations.timer_claim_until: a server that read the timer as due
--   claims it until then, so that other servers leave it alone; any write of
--   the conversation releases the claim.
ALTER TABLE conversations ADD COLUMN snooze_end_time INTEGER;
ALTER TABLE conversations ADD COLUMN due_time INTEGER;
ALTER TABLE conversations ADD COLUMN timer_claim_until INTEGER;
CREATE INDEX conversations_by_due_time ON conversations (due_time) WHERE due_time IS NOT NULL;
-- "My Open / Pending / Closed": counts per status for one assignee.
CREATE INDEX conversations_by_assignee_status ON conversations (workspace_id, assignee_agent_id, status);

-- Auto-close: off when NULL; microseconds without a message otherwise, and
-- what the visitor is told first (NULL: nothing).
ALTER TABLE workspaces ADD COLUMN auto_close_after INTEGER;
ALTER TABLE workspaces ADD COLUMN auto_close_message TEXT;

-- A new kind of event, conversation_assigned: SQLite cannot alter a CHECK,
-- so the feed table is rebuilt as it stands, rows and sequences unchanged.
CREATE TABLE events_new (
    workspace_id    INTEGER NOT NULL,
    sequence        INTEGER NOT NULL,
    event_id        TEXT    NOT NULL,
    conversation_id TEXT    NOT NULL,
    kind            TEXT    NOT NULL CHECK (kind IN ('conversation_started', 'status_changed', 'message_posted', 'conversation_assigned')),
    audience        TEXT    NOT NULL CHECK (audience IN ('everyone', 'agents')),
    create_time     INTEGER NOT NULL,
    payload         TEXT    NOT NULL,
    PRIMARY KEY (workspace_id, sequence)
);
INSERT INTO events_new (workspace_id, sequence, event_id, conversation_id, kind, audience, create_time, payload)
    SELECT workspace_id, sequence, event_id, conversation_id, kind, audience, create_time, payload
    FROM events ORDER BY workspace_id, sequence;
DROP TABLE events;
ALTER TABLE events_new RENAME TO events;
CREATE INDEX events_by_conversation ON events (conversation_id, sequence);
