#!/usr/bin/env bash
# nbd-tls-peers.sh: what TLS costs troika's NBD server, side by side with nbdkit.
#
# Compares, interleaved per round (which server goes first alternates), medians of ROUNDS:
#   - troika over TLS (x509) vs `nbdkit --tls=require memory` over TLS (x509), and
#     troika plain vs nbdkit plain: fio's nbd engine, 4k random read qd32 and 1M
#     sequential read qd8, RUNTIME seconds each, on a SIZE working set written first;
#   - troika vs nbdkit over TLS-PSK: nbdcopy of the whole SIZE to null: (MiB/s). fio's nbd
#     engine cannot use PSK: libnbd refuses local files (tls-psk-file) in URIs unless the
#     program allows them, and fio does not; x509 works through libnbd's default
#     $HOME/.pki/libnbd.
# troika runs `--nbd-tls on --nbd-open` (TLS and plain on the same port; plain clients and
# TLS clients without an identity see every export), with host `rig` holding the NBD
# identity `rig` (PSK identity and client certificate CN) and volume V mapped to it, so an
# identified client reaches V through access control; nbdkit runs once per mode.
# Prints a table: median IOPS (4k) or MiB/s (1M, nbdcopy) and the ratio troika/nbdkit.
#
# Usage: test-rigs/nbd-tls-peers.sh          (ROUNDS=3 RUNTIME=5 SIZE=256M by default)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

ROUNDS="${ROUNDS:-3}"
RUNTIME="${RUNTIME:-5}"
SIZE="${SIZE:-256M}"
for tool in fio nbdkit nbdcopy openssl; do
    command -v "$tool" >/dev/null || { echo "nbd-tls-peers: $tool is not installed" >&2; exit 1; }
done

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --- TLS material: a CA, a server certificate for 127.0.0.1, a client one, a PSK file.
PKI="$WORK/pki"
mkdir -p "$PKI/server" "$PKI/home/.pki/libnbd" "$WORK/troika/tls"
(
    cd "$PKI"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=rig CA" -keyout ca-key.pem -out ca-cert.pem 2>/dev/null
    sign() { # sign NAME SUBJECT EXTENSIONS
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "$2" \
            -keyout "$1-key.pem" -out "$1.csr" 2>/dev/null
        printf '%b' "$3" >"$1.ext"
        openssl x509 -req -in "$1.csr" -CA ca-cert.pem -CAkey ca-key.pem -CAcreateserial \
            -days 2 -extfile "$1.ext" -out "$1-cert.pem" 2>/dev/null
    }
    sign server "/CN=localhost" "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
    sign client "/CN=rig" "extendedKeyUsage=clientAuth\n"
    cp ca-cert.pem server-cert.pem server-key.pem server/
    cp ca-cert.pem client-cert.pem client-key.pem home/.pki/libnbd/
    echo "rig:$(openssl rand -hex 32)" >psk.keys
    chmod 600 psk.keys server/server-key.pem
)
cp "$PKI/server-cert.pem" "$PKI/server-key.pem" "$WORK/troika/tls/"
cp "$PKI/ca-cert.pem" "$WORK/troika/tls/nbd-ca.pem"

# --- servers
PORT_T="$(free_port)"
PORT_X="$(free_port)"
PORT_P="$(free_port)"
NBD_LISTEN="127.0.0.1:$PORT_T" NBD_TLS=on start_troika "$WORK/troika" "$WORK/troika.log" \
    --mgmt-listen none --iscsi-listen none --nbd-tls-psk "$PKI/psk.keys" --nbd-open
for ((i = 0; i < 100; i++)); do
    grep -q "serving;" "$WORK/troika.log" && break
    sleep 0.1
done
"$TROIKA" --data "$WORK/troika" pool create p --size 3G >/dev/null
"$TROIKA" --data "$WORK/troika" vol create V --pool p --size "$SIZE" >/dev/null
"$TROIKA" --data "$WORK/troika" host create rig >/dev/null
"$TROIKA" --data "$WORK/troika" host add-port rig --nbd-identity rig >/dev/null
"$TROIKA" --data "$WORK/troika" host map rig V >/dev/null
nbdkit -f -i 127.0.0.1 -p "$PORT_X" --tls=on --tls-certificates="$PKI/server" memory "$SIZE" \
    >"$WORK/nbdkit-x509.log" 2>&1 &
PIDS+=($!)
nbdkit -f -i 127.0.0.1 -p "$PORT_P" --tls=on --tls-psk="$PKI/psk.keys" memory "$SIZE" \
    >"$WORK/nbdkit-psk.log" 2>&1 &
PIDS+=($!)
sleep 1

uri() { # uri SERVER MODE
    local port
    case "$1" in
    troika) port="$PORT_T" path=V ;;
    nbdkit) if [[ "$2" == psk ]]; then port="$PORT_P"; else port="$PORT_X"; fi; path= ;;
    esac
    case "$2" in
    plain) echo "nbd://127.0.0.1:$port/$path" ;;
    x509) echo "nbds://127.0.0.1:$port/$path" ;;
    psk) echo "nbds://rig@127.0.0.1:$port/$path?tls-psk-file=$PKI/psk.keys" ;;
    esac
}

# Fill both working sets once (so reads are of written data, not holes).
for server in troika nbdkit; do
    HOME="$PKI/home" timeout 300 fio --name=fill --ioengine=nbd --uri="$(uri "$server" x509)" \
        --rw=write --bs=1M --iodepth=8 --size="$SIZE" --output=/dev/null
done
# nbdkit's PSK instance gets troika's data.
timeout 300 nbdcopy "$(uri troika x509)?tls-certificates=$PKI/home/.pki/libnbd" "$(uri nbdkit psk)"

# fio_run SERVER MODE TEST: prints IOPS (4k) or MiB/s (1M).
fio_run() {
    local rw bs depth field
    case "$3" in
    4k-randread) rw=randread bs=4k depth=32 field=iops ;;
    1M-seqread) rw=read bs=1M depth=8 field=bw ;;
    esac
    HOME="$PKI/home" timeout $((RUNTIME + 60)) fio --name=bench --ioengine=nbd \
        --uri="$(uri "$1" "$2")" --rw="$rw" --bs="$bs" --iodepth="$depth" --size="$SIZE" \
        --time_based --runtime="$RUNTIME" --output-format=json 2>/dev/null |
        sed -n '/^{/,$p' |
        python3 -c "import json,sys; r=json.load(sys.stdin)['jobs'][0]['read']; \
print(round(r['iops']) if '$field' == 'iops' else round(r['bw'] / 1024))"
}

# copy_run SERVER: nbdcopy of the whole export over PSK to null:, in MiB/s.
copy_run() {
    local start end bytes
    bytes=$(numfmt --from=iec "$SIZE")
    start=$(date +%s.%N)
    timeout 300 nbdcopy "$(uri "$1" psk)" null: >/dev/null 2>&1
    end=$(date +%s.%N)
    python3 -c "print(round($bytes / 1048576 / ($end - $start)))"
}

declare -A RESULTS
for ((round = 1; round <= ROUNDS; round++)); do
    if ((round % 2)); then order=(troika nbdkit); else order=(nbdkit troika); fi
    for mode in x509 plain; do
        for test in 4k-randread 1M-seqread; do
            for server in "${order[@]}"; do
                RESULTS["$server $mode $test"]+="$(fio_run "$server" "$mode" "$test") "
            done
        done
    done
    for server in "${order[@]}"; do
        RESULTS["$server psk nbdcopy"]+="$(copy_run "$server") "
    done
    echo "round $round done" >&2
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
printf '| %-6s | %-12s | %-8s | %10s | %10s | %6s |\n' mode test unit troika nbdkit ratio
printf '|%s|\n' "--------|--------------|----------|------------|------------|--------"
for key in "x509 4k-randread IOPS" "x509 1M-seqread MiB/s" "plain 4k-randread IOPS" \
    "plain 1M-seqread MiB/s" "psk nbdcopy MiB/s"; do
    read -r mode test unit <<<"$key"
    t=$(echo "${RESULTS["troika $mode $test"]}" | median)
    n=$(echo "${RESULTS["nbdkit $mode $test"]}" | median)
    printf '| %-6s | %-12s | %-8s | %10s | %10s | %6s |\n' "$mode" "$test" "$unit" "$t" "$n" \
        "$(python3 -c "print(f'{$t / $n:.2f}' if $n else 'n/a')")"
done
echo "(medians of $ROUNDS rounds, ${RUNTIME}s fio runs, $SIZE working set; raw: $(declare -p RESULTS | cut -c1-2000))" >&2
