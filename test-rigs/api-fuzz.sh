#!/usr/bin/env bash
# Schemathesis against the REST API: generates requests from GET /api/rest/openapi.json and
# reports any 5xx (the `not_a_server_error` check). Reported, not part of `cargo test`.
#
# Env: MAX_TIME (seconds of fuzzing, default 300), MAX_EXAMPLES (per operation, default 100),
# WORKERS (default 2), VENV (default $HOME/.cache/troika-schemathesis), SEED (optional),
# INCLUDE_USER_CHANGES=1 to also fuzz PUT/DELETE /api/rest/users/{id}, which can change or
# delete the admin user the run authenticates as and turn the rest into 401s.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MAX_TIME="${MAX_TIME:-300}"
MAX_EXAMPLES="${MAX_EXAMPLES:-100}"
WORKERS="${WORKERS:-2}"
VENV="${VENV:-$HOME/.cache/troika-schemathesis}"

if [[ ! -x "$VENV/bin/schemathesis" ]]; then
    echo "installing schemathesis into $VENV" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet schemathesis
fi
echo "schemathesis: $("$VENV/bin/schemathesis" --version)"

PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
DATA="$WORK/data"
start_troika "$DATA" "$WORK/serve.log" --hw "$REPO/hw/api.toml" --mgmt-listen "127.0.0.1:$PORT" --mgmt-tls off
BASE="http://127.0.0.1:$PORT"
for ((i = 0; i < 100; i++)); do
    curl -s --max-time 2 -o /dev/null "$BASE/api/rest/_features" && break
    sleep 0.1
done
PASSWORD="$(cat "$DATA/admin-password")"

# Something to find: a pool and a volume, so ids 1 exist.
curl -s --max-time 10 -u "admin:$PASSWORD" -H 'Content-Type: application/json' \
    -d '{"name":"fuzz-pool","physical_capacity":10737418240}' "$BASE/api/rest/pools" >/dev/null
curl -s --max-time 10 -u "admin:$PASSWORD" -H 'Content-Type: application/json' \
    -d '{"name":"fuzz-vol","pool_id":1,"size":1073741824}' "$BASE/api/rest/volumes" >/dev/null

EXCLUDE=()
if [[ "${INCLUDE_USER_CHANGES:-0}" != 1 ]]; then
    EXCLUDE=(--exclude-operation-id put_api_rest_users__id_
             --exclude-operation-id delete_api_rest_users__id_)
fi
SEED_ARGS=()
[[ -n "${SEED:-}" ]] && SEED_ARGS=(--seed "$SEED")

REPORT="$WORK/report"
# schemathesis keeps its example database in the working directory: keep it in $WORK.
cd "$WORK"
status=0
# The outer timeout bounds the whole run even if schemathesis' own budget overruns.
timeout --kill-after=30 "$((MAX_TIME + 120))" \
    "$VENV/bin/schemathesis" run "$BASE/api/rest/openapi.json" \
    --checks not_a_server_error \
    --auth "admin:$PASSWORD" \
    --max-time "$MAX_TIME" \
    --max-examples "$MAX_EXAMPLES" \
    --workers "$WORKERS" \
    --request-timeout 10 \
    --continue-on-failure \
    --no-color \
    --report junit --report-junit-path "$REPORT/junit.xml" \
    "${EXCLUDE[@]}" "${SEED_ARGS[@]}" || status=$?

echo
echo "== summary"
echo "schemathesis exit status: $status (0: no failures)"
if [[ -f "$REPORT/junit.xml" ]]; then
    python3 - "$REPORT/junit.xml" <<'PY'
import sys
import xml.etree.ElementTree as ET

root = ET.parse(sys.argv[1]).getroot()
cases = root.iter("testcase")
tested = failed = 0
for case in cases:
    tested += 1
    problems = case.findall("failure") + case.findall("error")
    if problems:
        failed += 1
        print(f"FAILED {case.get('name')}")
        for problem in problems:
            print("   ", (problem.get("message") or problem.text or "").strip()[:2000])
print(f"JUnit test cases (one per operation, plus stateful): {tested}, with failures: {failed}")
PY
fi
echo "node still answers: $(curl -s --max-time 5 -o /dev/null -w '%{http_code}' -u "admin:$PASSWORD" "$BASE/api/rest/system")"
echo "panics or errors in the node's log:"
grep -iE 'panic|error' "$WORK/serve.log" | head -20 || echo "  none"
exit "$status"
