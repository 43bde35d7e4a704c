#!/usr/bin/env bash
# The whole test suite: installs what it needs when missing, builds the wolfSSL interop peer
# once (scripts/wolfssl-peer.sh, cached), runs every test (unit, property, known-answer,
# in-memory handshake, real-UDP interop), lints, the instruction-count gate, dtls-io's ring
# code under AddressSanitizer, the Debian package (built and checked in a scratch root), and
# a short fuzz smoke run. Exits non-zero on the first failure.
#
#   scripts/test.sh                 # everything
#   FUZZ_SECONDS=0 scripts/test.sh  # skip the fuzz smoke run
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

# --- prerequisites -----------------------------------------------------------------
need_apt=()
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v gnutls-serv >/dev/null 2>&1 || need_apt+=(gnutls-bin)
command -v cc >/dev/null 2>&1 || need_apt+=(gcc)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
# The instruction-count gate runs the record paths under callgrind.
command -v valgrind >/dev/null 2>&1 || need_apt+=(valgrind)
# The systemd unit files shipped with dtlsd are checked with `systemd-analyze verify`.
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
# The Debian package is unpacked and inspected with dpkg-deb.
command -v dpkg-deb >/dev/null 2>&1 || need_apt+=(dpkg)
# dtls-bench's `peers` (B8) links OpenSSL's libssl through the openssl crate.
{ command -v pkg-config >/dev/null 2>&1 && pkg-config --exists openssl; } || need_apt+=(libssl-dev)
if ((${#need_apt[@]})); then
    log "installing ${need_apt[*]}"
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: missing ${need_apt[*]} and not root; install them with apt-get" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need_apt[@]}"
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo not found; install the Rust toolchain (rustup) first" >&2
    exit 1
fi

# wolfSSL 5.9.4's example client and server: the DTLS 1.3 / connection-ID interop peer (no
# Debian package has them). Built from source once into a cache, then reused; a test peer
# only, never linked into our crates. The interop tests find them through these variables.
log "wolfSSL example client and server (scripts/wolfssl-peer.sh: built once, then cached)"
if ! wolfssl_env=$(scripts/wolfssl-peer.sh); then
    echo "error: scripts/wolfssl-peer.sh failed; the wolfSSL interop tests need its programs" >&2
    exit 1
fi
while IFS='=' read -r name value; do
    case "$name" in
        DTLS_WOLFSSL_CLIENT | DTLS_WOLFSSL_SERVER) export "$name=$value" ;;
    esac
done <<<"$wolfssl_env"
if [ ! -x "${DTLS_WOLFSSL_CLIENT:-}" ] || [ ! -x "${DTLS_WOLFSSL_SERVER:-}" ]; then
    echo "error: scripts/wolfssl-peer.sh did not name both wolfSSL programs:" >&2
    printf '%s\n' "$wolfssl_env" >&2
    exit 1
fi
echo "DTLS_WOLFSSL_CLIENT=$DTLS_WOLFSSL_CLIENT"
echo "DTLS_WOLFSSL_SERVER=$DTLS_WOLFSSL_SERVER"

# --- static checks -------------------------------------------------------------------
log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy (workspace, all targets, -D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings

# --- tests ---------------------------------------------------------------------------
if command -v cargo-nextest >/dev/null 2>&1; then
    log "cargo nextest run --workspace"
    nextest_log=$(mktemp)
    trap 'rm -f "$nextest_log"' EXIT
    cargo nextest run --workspace --locked --no-fail-fast 2>&1 | tee "$nextest_log"
    log "doc tests"
    cargo test --workspace --locked --doc
else
    log "cargo test --workspace (cargo-nextest not installed)"
    cargo test --workspace --locked --no-fail-fast
fi

# --- instruction-count gate ------------------------------------------------------------
log "instruction-count gate (callgrind vs bench/icount/baseline.json)"
scripts/icount.sh

# --- the ring code under AddressSanitizer ------------------------------------------------
log "dtls-io tests under AddressSanitizer (scripts/asan.sh: io_uring and AF_XDP rings)"
scripts/asan.sh

# --- B6 scaling script ------------------------------------------------------------------
# Not timed: one-second runs with few sessions, checking only that both tables come out.
log "scripts/scale.sh (B6 scaling, tiny sizes; both tables printed, no rate asserted)"
scale_out=$(DURATION=1 SESSIONS=4 scripts/scale.sh)
printf '%s\n' "$scale_out"
if ! grep -q '^records (' <<<"$scale_out" || ! grep -q '^handshakes (' <<<"$scale_out"; then
    echo "error: scripts/scale.sh did not print both tables" >&2
    exit 1
fi

# --- Debian package ------------------------------------------------------------------
log "Debian package (scripts/package-deb.sh), unpacked and checked (scripts/check-deb.sh)"
scripts/check-deb.sh "$(scripts/package-deb.sh)"

# --- fuzz smoke run ------------------------------------------------------------------
if [ "${FUZZ_SECONDS:-10}" != 0 ] && [ -x scripts/fuzz-smoke.sh ]; then
    log "fuzz smoke run (${FUZZ_SECONDS:-10} s per target)"
    scripts/fuzz-smoke.sh "${FUZZ_SECONDS:-10}"
fi

log "all checks passed"
# One plain closing line with the test counts (nextest's summary says "N tests run: N passed").
if [ -n "${nextest_log:-}" ]; then
    passed=$(sed -n 's/.* tests\{0,1\} run: \([0-9]*\) passed.*/\1/p' "$nextest_log" | tail -n 1)
    echo "tests: ${passed:-0} passed, 0 failed"
fi
