#!/usr/bin/env bash
# Runs the README's walkthrough exactly as written, so that it cannot rot:
# every ```sh block that follows a `<!-- walkthrough -->` line, in order, in
# one bash (set -eu: any command that fails fails the run), then every
# ```python block that follows `<!-- walkthrough:python -->`, against a fresh
# server on a fresh database, on localhost:50051 as the README says, in a
# directory that holds only the checkout's proto/ and examples/ (the README
# runs those commands from the checkout). The keys are set the way the README tells the reader
# to: from what the server printed on its first start. Needs grpcurl, jq,
# python3 with grpcio, grpcio-tools and grpcio-status.
#
# usage: scripts/readme_walkthrough.sh path/to/conversations
set -euo pipefail

BIN=$(realpath "${1:?usage: $0 path/to/conversations}")
ROOT=$(cd "$(dirname "$0")/.." && pwd)
README="$ROOT/README.md"
WORK=$(mktemp -d)
SERVER_PID=
cleanup() {
    [[ -n "$SERVER_PID" ]] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

# The blocks, in order.
awk '
    /^<!-- walkthrough -->$/ { armed = 1; next }
    armed && /^```sh$/       { inside = 1; armed = 0; printf "\n# --- README block %d\n", ++n; next }
    inside && /^```$/        { inside = 0; next }
    inside                   { print }
' "$README" > "$WORK/walkthrough.sh"
BLOCKS=$(grep -c '^# --- README block' "$WORK/walkthrough.sh" || true)
[[ "$BLOCKS" -ge 10 ]] || { echo "found only $BLOCKS walkthrough blocks in README.md" >&2; exit 1; }
awk '
    /^<!-- walkthrough:python -->$/ { armed = 1; next }
    armed && /^```python$/          { inside = 1; armed = 0; next }
    inside && /^```$/               { inside = 0; next }
    inside                          { print }
' "$README" > "$WORK/walkthrough.py"
[[ -s "$WORK/walkthrough.py" ]] || { echo "no Python walkthrough block in README.md" >&2; exit 1; }

# `conversations` on PATH, as the README's readers have it.
mkdir -p "$WORK/bin"
ln -s "$BIN" "$WORK/bin/conversations"
export PATH="$WORK/bin:$PATH"

cd "$WORK"
ln -s "$ROOT/proto" proto
ln -s "$ROOT/examples" examples
if (exec 3<>/dev/tcp/127.0.0.1/50051) 2>/dev/null; then
    echo "localhost:50051 is taken; the walkthrough needs it (stop what listens there)" >&2
    exit 1
fi
conversations serve > server.out 2> server.err &
SERVER_PID=$!
for _ in $(seq 1 300); do
    grep -q '^Listening on' server.out 2>/dev/null && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat server.err >&2; echo "the server exited" >&2; exit 1; }
    sleep 0.1
done
grep -q '^Listening on' server.out || { cat server.err >&2; echo "the server did not start" >&2; exit 1; }

AGENT="authorization: Bearer $(sed -n 's/^agent key: //p' server.out)"
VISITOR="authorization: Bearer $(sed -n 's/^visitor key: //p' server.out)"
export AGENT VISITOR

echo "running $BLOCKS README blocks against a fresh server:"
if ! bash -eu "$WORK/walkthrough.sh" > walkthrough.out 2>&1; then
    cat walkthrough.out >&2
    echo "FAIL: the README walkthrough does not run as written (output above)" >&2
    exit 1
fi
cat walkthrough.out
if ! python3 "$WORK/walkthrough.py" > python.out 2>&1; then
    cat python.out >&2
    echo "FAIL: the README's Python client does not run as written (output above)" >&2
    exit 1
fi
cat python.out
echo "PASS: the README walkthrough ran top to bottom ($BLOCKS shell blocks, then the Python client)"
