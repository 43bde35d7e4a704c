#!/usr/bin/env bash
# The whole test suite: installs what it needs when missing, builds, runs every test
# (unit, property, known-answer, in-memory handshake, real-UDP interop), lints, and a
# short fuzz smoke run. Exits non-zero on the first failure.
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
