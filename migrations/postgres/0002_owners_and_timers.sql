-- Ownership, snooze, auto-close and their durable timers (issue #10); the
-- same columns and meanings as migrations/sqlite/0005.
ALTER TABLE conversations ADD COLUMN snooze_end_time BIGINT;
ALTER TABLE conversations ADD COLUMN due_time BIGINT;
ALTER TABLE conversations ADD COLUMN timer_claim_until BIGINT;
-- Every server polls it for due timers: only rows with a timer are in it.
CREATE INDEX conversations_by_due_time ON conversations (due_time) WHERE due_time IS NOT NULL;
CREATE INDEX conversations_by_assignee_status ON conversations (workspace_id, assignee_agent_id, status);

ALTER TABLE workspaces ADD COLUMN auto_close_after BIGINT;
ALTER TABLE workspaces ADD COLUMN auto_close_message TEXT;

ALTER TABLE events DROP CONSTRAINT events_kind_check;
ALTER TABLE events ADD CONSTRAINT events_kind_check
    CHECK (kind IN ('conversation_started', 'status_changed', 'message_posted', 'conversation_assigned'));
