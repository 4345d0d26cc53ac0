-- Per-workspace event sequences, and per-workspace counters kept in the same
-- transaction as every change.
--
-- Until now `events.sequence` was one global AUTOINCREMENT: a workspace could
-- read the others' traffic volume in the gaps of its own cursor. From here on
-- each workspace's feed counts 1, 2, 3... on its own. Existing events are
-- renumbered per workspace in their old order, and the `event_sequence`
-- remembered in idempotency records (replayed to retries) is renumbered with
-- them.

-- The newest sequence of each workspace's feed, and how many of its
-- conversations are in each status: the Inbox tab counts, read in O(1)
-- instead of counting the workspace's conversations on every list.
CREATE TABLE workspace_counters (
    workspace_id  INTEGER PRIMARY KEY REFERENCES workspaces (workspace_id),
    event_head    INTEGER NOT NULL,
    open_count    INTEGER NOT NULL,
    pending_count INTEGER NOT NULL,
    closed_count  INTEGER NOT NULL
);

CREATE TEMP TABLE sequence_map (
    old_sequence INTEGER PRIMARY KEY,
    new_sequence INTEGER NOT NULL
);
INSERT INTO sequence_map (old_sequence, new_sequence)
    SELECT sequence, ROW_NUMBER() OVER (PARTITION BY workspace_id ORDER BY sequence) FROM events;

-- The feed, keyed by (workspace, sequence). A reader that has seen sequence N
-- of a workspace has seen all of that workspace's events before N: the one
-- writer assigns sequences in commit order.
CREATE TABLE events_new (
    workspace_id    INTEGER NOT NULL,
    sequence        INTEGER NOT NULL,
    event_id        TEXT    NOT NULL,
    conversation_id TEXT    NOT NULL,
    kind            TEXT    NOT NULL CHECK (kind IN ('conversation_started', 'status_changed', 'message_posted')),
    audience        TEXT    NOT NULL CHECK (audience IN ('everyone', 'agents')),
    create_time     INTEGER NOT NULL,
    payload         TEXT    NOT NULL,
    PRIMARY KEY (workspace_id, sequence)
);
INSERT INTO events_new (workspace_id, sequence, event_id, conversation_id, kind, audience, create_time, payload)
    SELECT e.workspace_id, m.new_sequence, e.event_id, e.conversation_id, e.kind, e.audience, e.create_time, e.payload
    FROM events e JOIN sequence_map m ON m.old_sequence = e.sequence
    ORDER BY e.sequence;

UPDATE idempotency_records
    SET response = json_set(response, '$.event_sequence',
        (SELECT new_sequence FROM sequence_map
         WHERE old_sequence = json_extract(idempotency_records.response, '$.event_sequence')))
    WHERE json_extract(response, '$.event_sequence') IN (SELECT old_sequence FROM sequence_map);

DROP TABLE events;
ALTER TABLE events_new RENAME TO events;
CREATE INDEX events_by_conversation ON events (conversation_id, sequence);
DROP TABLE sequence_map;

INSERT INTO workspace_counters (workspace_id, event_head, open_count, pending_count, closed_count)
    SELECT w.workspace_id,
        (SELECT COALESCE(MAX(sequence), 0) FROM events e WHERE e.workspace_id = w.workspace_id),
        (SELECT COUNT(*) FROM conversations c WHERE c.workspace_id = w.workspace_id AND c.status = 'open'),
        (SELECT COUNT(*) FROM conversations c WHERE c.workspace_id = w.workspace_id AND c.status = 'pending'),
        (SELECT COUNT(*) FROM conversations c WHERE c.workspace_id = w.workspace_id AND c.status = 'closed')
    FROM workspaces w;

-- Revocations are polled by the running server (its key cache): find them
-- without scanning every key.
CREATE INDEX api_keys_by_revoke_time ON api_keys (revoke_time) WHERE revoke_time IS NOT NULL;

-- The Inbox filters by assignee or visitor, newest first then by id: index the
-- whole order, so a filtered page is a range read with no sort, however many
-- conversations the workspace has.
DROP INDEX conversations_by_visitor;
DROP INDEX conversations_by_assignee;
CREATE INDEX conversations_by_visitor ON conversations (workspace_id, visitor_id, update_time DESC, conversation_id DESC);
CREATE INDEX conversations_by_assignee ON conversations (workspace_id, assignee_agent_id, update_time DESC, conversation_id DESC);
