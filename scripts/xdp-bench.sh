#!/usr/bin/env bash
# B9 (issue 16): `dtlsd serve` over a veth pair with each datagram backend, same run:
# round trips per second and the daemon's CPU per round trip (one DTLS record opened toward
# the backend, one sealed back) with --io xdp, uring and mmsg, at 1200 and 64 bytes.
# B8 across the veth pair, in the same run: OpenSSL's DTLS 1.2 echo server (`openssl`) and
# OpenSSL as a relay to the same echo backend (`openssl-relay`, the like-for-like peer: four
# datagrams per record, as ours), both `dtls-bench openssl-server`, driven by the same
# generator; per core = round trips per second / server CPU seconds per second (/proc).
#
#   ns "<tag>-a": 10.252.0.1/24 on xa               ns "<tag>-b": 10.252.0.2/24 on xb
#   dtlsd serve --io MODE [--interface xa]  <-veth->  dtls-bench throughput --server ...
#   (or dtls-bench openssl-server [--backend])
#   dtls-bench echo on 127.0.0.1:9000 (the backend)
#
#   scripts/xdp-bench.sh                       # release build, DURATION=5 s per run
#   DURATION=2 SIZES="1200" MODES="uring xdp" scripts/xdp-bench.sh
#   MODES="xdp openssl openssl-relay" scripts/xdp-bench.sh
#   DTLS_BENCH=... DTLSD=... scripts/xdp-bench.sh   # skip the build (e.g. on a lent host)
#
# Needs root (namespaces, bpf(), AF_XDP), `ip` and `openssl` (for the test PKI); installs
# ethtool when missing (the generator's veth end must stop sending partial UDP checksums,
# which the AF_XDP side rightly drops). The daemon's CPU is read from /proc/PID/stat over
# the middle of the measured window; the generator runs on the other cores. On the 2-core
# VM generator and daemon share the machine with everything else: compare the backends
# with each other in one run, not with other hosts. Not a test: nothing asserts a rate.
set -euo pipefail
cd "$(dirname "$0")/.."

d=${DURATION:-5}
sizes=${SIZES:-1200 64}
modes=${MODES:-uring xdp mmsg openssl openssl-relay}
sessions=${SESSIONS:-64}
tag=dtlsxb$$
a=$tag-a
b=$tag-b
serve=10.252.0.1
port=4433

[ "$(id -u)" -eq 0 ] || { echo "xdp-bench: needs root (namespaces, bpf(), AF_XDP)" >&2; exit 2; }
if ! command -v ethtool >/dev/null 2>&1; then
    echo "xdp-bench: installing ethtool" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ethtool >/dev/null
fi
if [ -n "${DTLS_BENCH:-}" ] && [ -n "${DTLSD:-}" ]; then
    bench=$DTLS_BENCH
    dtlsd=$DTLSD
else
    cargo build --release --locked -q -p bench -p dtlsd
    bench=${CARGO_TARGET_DIR:-target}/release/dtls-bench
    dtlsd=${CARGO_TARGET_DIR:-target}/release/dtlsd
fi
bench=$(realpath "$bench")
dtlsd=$(realpath "$dtlsd")

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    ip netns del "$a" 2>/dev/null || true
    ip netns del "$b" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# A P-256 CA and a server certificate naming localhost (what dtls-bench's client checks).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=xdp-bench-ca -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
    -keyout "$work/server.key" -out "$work/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost\n' >"$work/san"
openssl x509 -req -in "$work/server.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" \
    -CAcreateserial -days 2 -extfile "$work/san" -out "$work/server.pem" 2>/dev/null

ip netns add "$a"
ip netns add "$b"
ip -n "$a" link set lo up
ip -n "$b" link set lo up
ip -n "$a" link add xa type veth peer name xb netns "$b"
ip -n "$a" addr add "$serve/24" dev xa
ip -n "$b" addr add 10.252.0.2/24 dev xb
ip -n "$a" link set xa up
ip -n "$b" link set xb up
ip netns exec "$b" ethtool -K xb tx off >/dev/null

ip netns exec "$a" "$bench" echo --listen 127.0.0.1:9000 >/dev/null 2>&1 &
pids+=($!)

ticks=$(getconf CLK_TCK)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

printf '%-13s %6s %13s %12s %13s %9s %8s %10s\n' server size "round trips/s" "CPU µs/trip" \
    "trips/core-s" "vs uring" lost "p99 µs"
declare -A rate cpu
for size in $sizes; do
    for mode in $modes; do
        case "$mode" in
            openssl | openssl-relay)
                server_cmd=("$bench" openssl-server --listen "$serve:$port"
                    --cert "$work/server.pem" --key "$work/server.key")
                [ "$mode" = openssl-relay ] && server_cmd+=(--backend 127.0.0.1:9000)
                ;;
            *)
                server_cmd=(env RUST_LOG=warn "$dtlsd" serve --listen "$serve:$port"
                    --backend 127.0.0.1:9000
                    --cert "$work/server.pem" --key "$work/server.key" --shards 1
                    --io "$mode" --admin-socket off)
                [ "$mode" = xdp ] && server_cmd+=(--interface xa)
                ;;
        esac
        ip netns exec "$a" "${server_cmd[@]}" >/dev/null 2>"$work/dtlsd.log" &
        daemon=$!
        sleep 1
        if ! kill -0 "$daemon" 2>/dev/null; then
            echo "xdp-bench: server $mode did not start:" >&2
            cat "$work/dtlsd.log" >&2
            exit 1
        fi
        ip netns exec "$b" "$bench" throughput --server "$serve:$port" --ca "$work/ca.pem" \
            --size "$size" --sessions "$sessions" --duration "$d" --warmup 1 \
            --json "$work/run.json" >"$work/run.txt" 2>&1 &
        gen=$!
        # The middle of the measured window: after the handshakes and the warm-up.
        sleep 2
        t0=$(date +%s.%N)
        c0=$(cpu_ticks "$daemon")
        sleep "$(awk -v d="$d" 'BEGIN { print (d > 2 ? d - 1 : d / 2) }')"
        c1=$(cpu_ticks "$daemon")
        t1=$(date +%s.%N)
        rc=0
        wait "$gen" || rc=$?
        kill "$daemon" 2>/dev/null || true
        wait "$daemon" 2>/dev/null || true
        if [ "$rc" -ne 0 ] && [ "$rc" -ne 3 ]; then
            echo "xdp-bench: the generator failed against --io $mode:" >&2
            cat "$work/run.txt" "$work/dtlsd.log" >&2
            exit 1
        fi
        read -r pps lost p99 < <(python3 -c 'import json,sys
r = json.load(open(sys.argv[1]))["results"]
print(r["pps"] or 0, (r["drops"] or {}).get("lost", 0), ((r["latency_ns"] or {}).get("p99") or 0) / 1e3)' "$work/run.json")
        us=$(awk -v c0="$c0" -v c1="$c1" -v t0="$t0" -v t1="$t1" -v hz="$ticks" -v pps="$pps" \
            'BEGIN { cps = (c1 - c0) / hz / (t1 - t0); printf "%.2f", (pps > 0 ? cps / pps * 1e6 : 0) }')
        rate[$mode]=$pps
        cpu[$mode]=$us
        mark=""
        [ "$rc" -eq 3 ] && mark=" (invalid run: $(grep -m1 -i invalid "$work/run.txt" || true))"
        vs="-"
        if [ -n "${rate[uring]:-}" ] && [ "$mode" != uring ]; then
            vs=$(awk -v x="$pps" -v u="${rate[uring]}" 'BEGIN { printf "%.2fx", x / u }')
        fi
        # Round trips per second of the server's CPU (one core fully used = per core).
        per_core=$(awk -v us="$us" 'BEGIN { printf "%.0f", (us > 0 ? 1e6 / us : 0) }')
        printf '%-13s %6s %13.0f %12s %13s %9s %8s %10.0f%s\n' "$mode" "$size" "$pps" "$us" \
            "$per_core" "$vs" "$lost" "$p99" "$mark"
        sleep 0.5
    done
    # Ours per core against OpenSSL's per core: the ratio of CPU per round trip.
    for peer in openssl openssl-relay; do
        [ -n "${cpu[$peer]:-}" ] || continue
        line=""
        for mode in uring xdp mmsg; do
            [ -n "${cpu[$mode]:-}" ] || continue
            line+=$(awk -v m="$mode" -v o="${cpu[$peer]}" -v u="${cpu[$mode]}" \
                'BEGIN { printf " %s %.2fx", m, (u > 0 ? o / u : 0) }')
        done
        [ -n "$line" ] && echo "  $size B, ours per core / $peer per core:$line"
    done
    unset rate cpu
    declare -A rate cpu
done
