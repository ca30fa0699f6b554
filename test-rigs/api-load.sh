#!/usr/bin/env bash
# Management API under load, and its effect on the data path. See test-rigs/README.md.
#
# 1. creates VOLUMES (default 10000) volumes over the REST API;
# 2. requests/s of `GET /api/rest/volumes?page_size=1000` and of a single-volume GET
#    (examples/api_load.rs, keep-alive, basic auth) for RUN_SECONDS (default 10) each;
# 3. fio 4k random read IOPS at iodepth 32 on a prefilled volume, idle and then while
#    HAMMER (default 4) connections hammer HAMMER_TARGET (default the 1000-volume list),
#    alternating for ROUNDS (default 3) rounds, with the median ratio (SKIP_RATES=1 skips
#    step 2);
# 4. infinisdk creating and deleting BULK (default 1000) volumes, when its venv exists
#    (target/infinisdk-venv, as ./test.sh builds it).
set -euo pipefail
[[ -n "${DEBUG:-}" ]] && set -x
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

VOLUMES="${VOLUMES:-10000}"
SECONDS_EACH="${RUN_SECONDS:-10}"
HAMMER="${HAMMER:-4}"
HAMMER_TARGET="${HAMMER_TARGET:-/api/rest/volumes?page_size=1000}"
SKIP_RATES="${SKIP_RATES:-}"
ROUNDS="${ROUNDS:-3}"
BULK="${BULK:-1000}"
PORT="${PORT:-18080}"
DATA="$WORK/troika"

(cd "$REPO" && cargo build --release --quiet --example api_load)
LOAD="$REPO/target/release/examples/api_load"

start_troika "$DATA" "$WORK/troika.log" --hw "$REPO/hw/api.toml" --mgmt-listen "127.0.0.1:$PORT" --mgmt-tls off
PASSWORD="$(cat "$DATA/admin-password")"
"$TROIKA" --data "$DATA" pool create P --size 100G --virtual-size 100T >/dev/null

echo "creating $VOLUMES volumes"
started=$(date +%s.%N)
python3 - "$DATA/troika.sock" "$VOLUMES" <<'PY'
import json, socket, sys
path, count = sys.argv[1], int(sys.argv[2])
for index in range(count):
    body = json.dumps({"name": f"v{index}", "pool_id": 1, "size": 1 << 30})
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.sendall((f"POST /api/rest/volumes HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
               f"Content-Length: {len(body)}\r\n\r\n{body}").encode())
    answer = b""
    while chunk := s.recv(65536):
        answer += chunk
    s.close()
    if not answer.startswith(b"HTTP/1.1 201"):
        sys.exit(f"create {index} failed: {answer[:300]!r}")
PY
echo "created $VOLUMES volumes in $(python3 -c "import time; print(round(time.time() - $started, 1))") s"

for connections in ${SKIP_RATES:+none} 1 4; do
    [[ "$connections" == none ]] && break
    "$LOAD" "127.0.0.1:$PORT" admin "$PASSWORD" "/api/rest/volumes?page_size=1000" "$SECONDS_EACH" "$connections"
    "$LOAD" "127.0.0.1:$PORT" admin "$PASSWORD" "/api/rest/volumes/5000" "$SECONDS_EACH" "$connections"
done

# The data path: a 1 GiB volume, 256 MiB of it written, read at random.
"$TROIKA" --data "$DATA" vol create fio --pool P --size 1G >/dev/null
URI="nbd+unix:///fio?socket=$DATA/nbd.sock"
fio --name=fill --ioengine=nbd --uri="$URI" --rw=write --bs=1M --size=256M --iodepth=8 \
    --output=/dev/null
fio_iops() {
    # fio's nbd engine prints a line before the JSON on stdout: take the report from a file.
    fio --name=read --ioengine=nbd --uri="$URI" --rw=randread --bs=4k --iodepth=32 \
        --size=256M --time_based --runtime="$SECONDS_EACH" --output-format=json \
        --output="$WORK/read.json" >/dev/null
    python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["jobs"][0]["read"]["iops"]))' \
        "$WORK/read.json"
}
# Idle and hammered runs alternate, ROUNDS times, so drift on a shared machine hits both.
ratios=()
idle_total=0
busy_total=0
for ((round = 1; round <= ROUNDS; round++)); do
    idle=$(fio_iops)
    "$LOAD" "127.0.0.1:$PORT" admin "$PASSWORD" "$HAMMER_TARGET" \
        "$((SECONDS_EACH + 4))" "$HAMMER" >"$WORK/hammer.txt" &
    HAMMER_PID=$!
    sleep 2
    busy=$(fio_iops)
    wait "$HAMMER_PID"
    ratio=$(python3 -c "print(f'{$busy/$idle:.3f}')")
    ratios+=("$ratio")
    idle_total=$((idle_total + idle))
    busy_total=$((busy_total + busy))
    echo "round $round: fio 4k randread qd32: idle $idle IOPS, while the API is hammered $busy IOPS ($ratio of idle)"
    echo "    the hammer meanwhile: $(cat "$WORK/hammer.txt")"
done
echo "fio hammered/idle over $ROUNDS rounds: ${ratios[*]}; median $(printf '%s\n' "${ratios[@]}" | sort -n | sed -n "$(((ROUNDS + 1) / 2))p"); mean IOPS idle $((idle_total / ROUNDS)), hammered $((busy_total / ROUNDS)) ($(python3 -c "print(f'{$busy_total/$idle_total:.3f}')"))"

PYTHON="$REPO/target/infinisdk-venv/bin/python"
if [[ -x "$PYTHON" ]]; then
    TROIKA_URL_HOST=127.0.0.1 TROIKA_URL_PORT="$PORT" TROIKA_ADMIN_PASSWORD="$PASSWORD" \
        TROIKA_INFINISDK_BULK="$BULK" "$PYTHON" "$REPO/tests/infinisdk/test_infinisdk.py" \
        | grep -E "infinisdk: (created|[0-9]+ passed)"
else
    echo "no infinisdk venv at $PYTHON; skipping the bulk create/delete timing"
fi
