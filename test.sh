#!/usr/bin/env bash
# The test suite, set up: README's test command and what CI runs.
#
# 1. Finds which of the clients the tests drive are missing (fio with its nbd engine,
#    libnbd's nbdinfo/nbdcopy, nbdkit, qemu-img/qemu-io, libiscsi's tools, losetup and
#    setpriv, python3's venv, and OpenSSL's headers for the build).
# 2. As root on Debian (or with password-less sudo), installs the missing packages with
#    apt-get; otherwise stops before any test with one message naming what is missing and
#    how to get it.
# 3. Makes the infinisdk virtual environment (target/infinisdk-venv) from
#    tests/infinisdk/requirements.txt, unless it is already there and current.
# 4. Runs `cargo test --release` with every tool required (TROIKA_REQUIRE_TOOLS=1), so a
#    test that would skip for lack of a client fails instead. Arguments go to cargo test.
#
# A plain `cargo test` still works without any of this; each test that cannot run for lack
# of a tool then prints a SKIPPED line naming the package.
set -euo pipefail
cd "$(dirname "$0")"

# Each entry: the Debian package, then the probe that shows it is installed.
probes=(
    "fio|fio --enghelp 2>/dev/null | grep -qx '[[:space:]]*nbd'"
    "libnbd-bin|command -v nbdinfo && command -v nbdcopy"
    "nbdkit|command -v nbdkit"
    "qemu-utils|command -v qemu-img && command -v qemu-io"
    "util-linux|command -v losetup && command -v setpriv"
    "python3-venv|python3 -c 'import ensurepip, venv'"
    "libiscsi-bin|command -v iscsi-test-cu && command -v iscsi-ls && command -v iscsi-inq && command -v iscsi-perf"
    "libssl-dev|pkg-config --exists openssl"
    "pkg-config|command -v pkg-config"
)

missing_packages() {
    local entry package probe
    for entry in "${probes[@]}"; do
        package=${entry%%|*}
        probe=${entry#*|}
        if ! bash -c "$probe" >/dev/null 2>&1; then
            printf '%s\n' "$package"
        fi
    done
}

mapfile -t missing < <(missing_packages)
if [ "${#missing[@]}" -gt 0 ]; then
    as_root=()
    if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        as_root=(sudo -n)
    fi
    if { [ "$(id -u)" -eq 0 ] || [ "${#as_root[@]}" -gt 0 ]; } && command -v apt-get >/dev/null; then
        echo "test.sh: installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        "${as_root[@]}" apt-get update
        "${as_root[@]}" apt-get install -y "${missing[@]}"
        mapfile -t missing < <(missing_packages)
    fi
fi
if [ "${#missing[@]}" -gt 0 ]; then
    echo "test.sh: the tests need these Debian packages, which are missing: ${missing[*]}." >&2
    echo "  Install them with: sudo apt-get install -y ${missing[*]}" >&2
    echo "  (or run ./test.sh as root on Debian, which installs them itself)." >&2
    echo "  To run only what this machine can, use plain 'cargo test --release'; it skips" >&2
    echo "  the tests that need them and says so." >&2
    exit 2
fi

# infinisdk, InfiniBox's Python SDK, drives the management API in tests/infinisdk.rs.
venv=target/infinisdk-venv
requirements=tests/infinisdk/requirements.txt
stamp=$venv/requirements.installed
if ! cmp -s "$requirements" "$stamp" 2>/dev/null; then
    echo "test.sh: making the infinisdk environment in $venv"
    if ! { python3 -m venv "$venv" &&
        "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"; }; then
        echo "test.sh: could not install infinisdk into $venv (pip needs to reach the Python package index)." >&2
        echo "  Retry when it can, or point TROIKA_INFINISDK_PYTHON at a Python that imports infinisdk." >&2
        exit 2
    fi
    cp "$requirements" "$stamp"
fi

export TROIKA_REQUIRE_TOOLS=1
exec cargo test --release "$@"
