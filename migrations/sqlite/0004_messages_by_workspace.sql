-- Every table says its workspace and every query is scoped by it: messages
-- now carry their conversation's workspace, so a thread is read within its
-- workspace like everything else (and the same rows copy to PostgreSQL,
-- whose tables are keyed by workspace first).
ALTER TABLE messages ADD COLUMN workspace_id INTEGER NOT NULL DEFAULT 0;
UPDATE messages SET workspace_id =
    (SELECT c.workspace_id FROM conversations c WHERE c.conversation_id = messages.conversation_id);
