#!/usr/bin/env bash
# Instruction-count gate: builds dtls-icount in release mode, measures instructions per
# iteration of the record and per-packet workloads under callgrind, and compares them with
# the committed baseline bench/icount/baseline.json. Deterministic: no wall-clock figure is
# involved, so it cannot flake on a noisy machine.
#
#   scripts/icount.sh            # check; exits 1 on a regression beyond the tolerance
#   scripts/icount.sh --update   # rewrite the baseline with this run (then commit it)
#   ICOUNT_TOLERANCE_PCT=5 scripts/icount.sh
#
# Needs valgrind (Debian: apt-get install valgrind). Counts depend on the compiler, valgrind
# and the CPU features valgrind reports: a difference is printed as a warning; refresh the
# baseline with --update when the toolchain changes on purpose.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v valgrind >/dev/null 2>&1; then
    echo "error: valgrind not found; install it (apt-get install valgrind)" >&2
    exit 2
fi

update=()
for arg in "$@"; do
    case "$arg" in
        --update) update=(--update) ;;
        -h | --help)
            sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "error: unknown argument $arg (use --update or --help)" >&2
            exit 2
            ;;
    esac
done

# Release build only: the workspace profile (lto = "fat", codegen-units = 1) is what ships.
cargo run --release --locked -q -p dtls-icount -- check \
    --baseline bench/icount/baseline.json \
    --tolerance "${ICOUNT_TOLERANCE_PCT:-3}" \
    ${update[@]+"${update[@]}"}
