#!/usr/bin/env bash
# Runs dtls-io's tests (the crate that owns every `unsafe` ring: io_uring submission and
# completion queues, the provided-buffer ring, the AF_XDP UMEM and its fill, completion, RX
# and TX rings, the raw socket calls) under AddressSanitizer: heap and stack out-of-bounds,
# use-after-free (a buffer freed while the kernel or a ring still points at it) and leaks
# fail the run. The AF_XDP test needs root (network namespaces and a veth pair) and says
# why it skips elsewhere.
#
# Miri cannot run this code (io_uring_enter, mmap'ed rings and bpf() are foreign calls it
# does not model), so a sanitizer is the check. What ASan does not see: accesses inside the
# memory shared with the kernel (the mmap'ed rings and UMEM are not heap), which the ring
# types bound-check themselves (and their unit tests exercise).
#
#   scripts/asan.sh
#
# Environment:
#   ASAN_TOOLCHAIN   rustup toolchain (default: nightly if installed, else the default
#                    toolchain with RUSTC_BOOTSTRAP=1, as -Zsanitizer is unstable)
#   ASAN_TARGET_DIR  cargo target dir (default <repo>/target/asan)
set -euo pipefail
cd "$(dirname "$0")/.."

toolchain=${ASAN_TOOLCHAIN:-}
if [ -z "$toolchain" ] && command -v rustup >/dev/null 2>&1 &&
    rustup toolchain list | grep -q '^nightly'; then
    toolchain=nightly
fi
cargo=(cargo)
if [ -n "$toolchain" ]; then
    cargo+=("+$toolchain")
fi
case "$toolchain" in
    nightly*) ;;
    *) export RUSTC_BOOTSTRAP=1 ;;
esac
host=$(rustc ${toolchain:+"+$toolchain"} -vV | sed -n 's/^host: //p')

# --target keeps build scripts and proc macros out of the sanitizer; the tests and the crate
# under test are instrumented.
export RUSTFLAGS="-Zsanitizer=address"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=1"
"${cargo[@]}" test --locked -p dtls-io --target "$host" \
    --target-dir "${ASAN_TARGET_DIR:-target/asan}" --lib --tests -- --test-threads 2

# The run proves something only if the code was instrumented.
bin=$(find "${ASAN_TARGET_DIR:-target/asan}/$host/debug/deps" -maxdepth 1 -type f -name 'uring-*' -perm -u+x | head -n 1)
if [ -z "$bin" ] || ! grep -q __asan_report "$bin"; then
    echo "asan: the io_uring test binary is not instrumented (${bin:-not found})" >&2
    exit 1
fi
echo "asan: dtls-io tests passed under AddressSanitizer ($bin instrumented)"
