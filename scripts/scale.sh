#!/usr/bin/env bash
# B6 scaling (../shared/BENCHMARKS.md): records through 1, 2, 4, ... shards and full
# handshakes through 1, 2, 4, ... control workers, up to the host's cores less one for the
# generator, each printed as a per-core efficiency table:
#   efficiency(N) = rate(N) / (N * rate(1))     (1.00: perfect scaling)
#
#   scripts/scale.sh                    # release build, DURATION=5 s per run
#   DURATION=1 SESSIONS=8 scripts/scale.sh
#   MAX_CORES=16 scripts/scale.sh       # override the detected core count
#   DTLS_BENCH=path/to/dtls-bench scripts/scale.sh   # skip the build
#
# The generator is dtls-bench's in-process one and runs on the cores the server leaves; on a
# host with few cores (the 2-core CI VM) every row after the first shares cores with it, so
# the figures there only show that the script works. Run it on a big host for the closing
# note. An invalid run (dtls-bench exit 3: e.g. a saturated generator) is kept and marked
# "*"; any other failure stops the script. Not a timed test: nothing here asserts a rate.
set -euo pipefail
cd "$(dirname "$0")/.."

d=${DURATION:-5}
sessions=${SESSIONS:-64}
cores=${MAX_CORES:-$(nproc)}
# The generator needs at least one core of its own where there is more than one.
top=$(( cores > 1 ? cores - 1 : 1 ))

if [ -n "${DTLS_BENCH:-}" ]; then
    b=$DTLS_BENCH
else
    cargo build --release --locked -q -p bench
    b=${CARGO_TARGET_DIR:-target}/release/dtls-bench
fi

# 1 2 4 8 ... up to $top (and $top itself when it is not a power of two).
steps() {
    local n=1 out=()
    while (( n <= top )); do out+=("$n"); n=$(( n * 2 )); done
    (( out[${#out[@]}-1] == top )) || out+=("$top")
    echo "${out[@]}"
}

# Runs dtls-bench; prints its output; exit 3 (invalid run) is tolerated.
run() {
    local rc=0 out
    out=$("$b" "$@" 2>&1) || rc=$?
    if (( rc != 0 && rc != 3 )); then
        printf '%s\n' "$out" >&2
        echo "error: dtls-bench $* failed (exit $rc)" >&2
        exit "$rc"
    fi
    printf '%s\n' "$out"
    (( rc == 0 )) || echo "INVALID"
}

# table TITLE UNIT "N rate flag" ...
table() {
    local title=$1 unit=$2
    shift 2
    printf '\n%s\n' "$title"
    printf '%6s %14s %8s %10s\n' "N" "$unit" "ratio" "per-core"
    local base=""
    for row in "$@"; do
        read -r n rate flag <<<"$row"
        [ -n "$base" ] || base=$rate
        awk -v n="$n" -v r="$rate" -v b="$base" -v f="$flag" 'BEGIN {
            ratio = (b > 0) ? r / b : 0
            printf "%6d %14.0f %8.2f %10.2f%s\n", n, r, ratio, ratio / n, (f == "1") ? " *" : ""
        }'
    done
}

echo "B6 scaling on $cores cores ($(uname -m)); runs of $d s; shards/workers up to $top"

rows=()
for n in $(steps); do
    out=$(run throughput --shards "$n" --sessions "$sessions" --duration "$d" --warmup 0.5)
    mpps=$(awk '/ Mpps /{ print $2; exit }' <<<"$out")
    [ -n "$mpps" ] || { printf '%s\n' "$out" >&2; echo "error: no Mpps figure" >&2; exit 1; }
    flag=0; grep -q '^INVALID$' <<<"$out" && flag=1
    rows+=("$n $(awk -v m="$mpps" 'BEGIN { printf "%.0f", m * 1e6 }') $flag")
done
table "records (dtls-bench throughput --shards N, AES-128-GCM, 1200 B, $sessions sessions)" "datagrams/s" "${rows[@]}"

rows=()
for n in $(steps); do
    out=$(run handshakes --control-threads "$n" --duration "$d")
    rate=$(awk '$1 == "full" { sub("/s", "", $2); print $2; exit }' <<<"$out")
    [ -n "$rate" ] || { printf '%s\n' "$out" >&2; echo "error: no full-handshake rate" >&2; exit 1; }
    flag=0; grep -q '^INVALID$' <<<"$out" && flag=1
    rows+=("$n $rate $flag")
done
table "handshakes (dtls-bench handshakes --control-threads N, full ECDHE-ECDSA)" "handshakes/s" "${rows[@]}"
echo
echo "* invalid run (generator saturated or datagrams lost); per-core = ratio / N"
