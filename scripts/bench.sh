#!/usr/bin/env bash
# The standard benchmark suite (B0-B8 of ../shared/BENCHMARKS.md at the primary size, 1200 B),
# release build, one JSON result per benchmark, then one summary table with every same-run
# ratio (and a merged summary.json that `dtls-bench compare` reads).
#
#   scripts/bench.sh                 # results/suite-<UTC timestamp>/
#   scripts/bench.sh OUT_DIR
#   DURATION=5 scripts/bench.sh      # seconds per data-plane run (default 10)
#
# Loopback only; takes about 4 minutes at the default duration. Absolute figures drift on
# shared machines: read the ratios, which are measured within one run.
#
# A benchmark whose run is invalid (dtls-bench exit 3: e.g. a saturated generator) does not
# stop the suite: its JSON is kept, marked "valid": false, the summary names it, and this
# script exits 3 at the end. Any other failure stops the suite with that exit code.
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-results/suite-$(date -u +%Y%m%dT%H%M%SZ)}
d=${DURATION:-10}
mkdir -p "$out"
log() { printf '\n== %s\n' "$*"; }

# Runs one benchmark; an invalid run (exit 3) is recorded and the suite goes on.
invalid=()
bench() {
    local rc=0
    "$b" "$@" || rc=$?
    if ((rc == 3)); then
        invalid+=("$*")
        printf '== INVALID run (kept, marked "valid": false): dtls-bench %s\n' "$*" >&2
    elif ((rc != 0)); then
        printf '== dtls-bench %s failed (exit %d); stopping the suite\n' "$*" "$rc" >&2
        exit "$rc"
    fi
}

cargo build --release --locked -q -p bench
b=target/release/dtls-bench

log "B0 record seal/open vs raw aws-lc-rs AEAD (1200 B)"
bench records --size 1200 --json "$out/b0-records.json"

for io in uring mmsg; do
    log "B1/B2 throughput, io $io: AES-128-GCM and the plaintext baseline interleaved (R1)"
    bench throughput --size 1200 --sessions 64 --duration "$d" --cipher aes128gcm \
        --io "$io" --shards 1 --compare-none --json "$out/b1b2-$io.json"
done
log "B2 throughput, ChaCha20-Poly1305 (io uring)"
bench throughput --size 1200 --sessions 64 --duration "$d" --cipher chacha20 \
    --io uring --shards 1 --json "$out/b2-chacha20.json"

log "B3 latency at 10/50/90 % of the closed-loop maximum"
bench latency --load 0.1 0.5 0.9 --size 1200 --sessions 64 --duration "$d" \
    --cipher aes128gcm --io uring --shards 1 \
    --out "$out/latency-load" --json "$out/b3-latency-load.json"
log "B3 latency at a fixed 20 000 datagrams/s, DTLS and the plaintext baseline (ratio)"
bench latency --rate 20000 --size 1200 --sessions 64 --duration "$d" \
    --cipher aes128gcm --io uring --shards 1 --compare-none \
    --out "$out/latency" --json "$out/b3-latency.json"

log "B4 handshakes/s, full and resumed, vs the crypto-only bound"
bench handshakes --duration 5 --parallel 16 --resume --json "$out/b4-handshakes.json"

log "B5 spoofed ClientHello flood with legitimate handshakes during it"
bench flood --rate 20000 --duration 5 --json "$out/b5-flood.json"

log "B6 shard scaling: 2 shards (this machine has $(nproc) cores; see the device notes)"
bench throughput --size 1200 --sessions 64 --duration "$d" --cipher aes128gcm \
    --io uring --shards 2 --json "$out/b6-shards2.json"

log "B8 OpenSSL DTLS 1.2 on this machine: in memory and over UDP sockets"
bench peers --json "$out/b8-peers.json"

log "summary ($out)"
"$b" summary "$out"/b*.json --json "$out/summary.json" | tee "$out/summary.txt"
if ((${#invalid[@]})); then
    printf '\n== %d invalid run(s), named in the summary above:\n' "${#invalid[@]}" >&2
    printf '   dtls-bench %s\n' "${invalid[@]}" >&2
    exit 3
fi
