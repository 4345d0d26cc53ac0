-- Every table says its workspace and every query is scoped by it: messages
-- now carry their conversation's workspace, so a thread is read within its
-- workspace like everything else (and the same rows copy to PostgreSQL,
-- whose tables are keyed by workspace first).
ALTER TABLE messages ADD COLUMN workspace_id INTEGER NOT NULL DEFAULT 0;
UPDATE messages SET workspace_id =
    (SELECT c.workspace_id FROM conversations c WHERE c.conversation_id = messages.conversation_id);

-- Every workspace has its counter row from its creation on (a batch locks
-- it on PostgreSQL); workspaces made before that got theirs at their first
-- change. Give the others theirs.
INSERT INTO workspace_counters (workspace_id, event_head, open_count, pending_count, closed_count)
    SELECT workspace_id, 0, 0, 0, 0 FROM workspaces w
    WHERE NOT EXISTS (SELECT 1 FROM workspace_counters c WHERE c.workspace_id = w.workspace_id);
