#!/usr/bin/env bash
# Builds wolfSSL 5.9.4's example client and server (TESTING.md "DTLS 1.3 and connection-ID
# peer") once into a cache directory and reuses them afterwards. They are an independent DTLS
# 1.2/1.3 implementation (with connection IDs) that the interop tests run as separate processes.
#
# wolfSSL is GPL-licensed: it is a test peer only. Nothing of wolfSSL is ever linked into our
# crates; this script builds two standalone example programs outside the workspace.
#
#   scripts/wolfssl-peer.sh
#
# prints, on stdout and nothing else:
#   DTLS_WOLFSSL_CLIENT=<path of examples/client/client>
#   DTLS_WOLFSSL_SERVER=<path of examples/server/server>
# Progress and errors go to stderr. Exits non-zero when the build fails.
#
# Cache: ${DTLS_PEER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dtls-peers}/wolfssl-5.9.4
# A stamp file there records the configure flags; with it present (and the same flags) the
# script builds nothing. The source comes from the `wolfssl-sys` crate (5.3.0 bundles wolfSSL
# 5.9.4), fetched with cargo. Needs autoconf, automake, libtool (installed with apt-get when
# missing and root), a C compiler, make and openssl (for the DH parameters file).
set -euo pipefail

WOLFSSL_VERSION=5.9.4
WOLFSSL_SYS_VERSION=5.3.0
CONFIGURE_FLAGS=(
    --enable-dtls --enable-dtls13 --enable-dtlscid --enable-dtls-frag-ch
    --enable-dtls-mtu --enable-mlkem --enable-curve25519 --enable-ed25519
    --enable-session-ticket
    --disable-shared --enable-static
)

log() { printf '==> wolfssl-peer: %s\n' "$*" >&2; }
die() {
    printf 'error: wolfssl-peer: %s\n' "$*" >&2
    exit 1
}

cache_root=${DTLS_PEER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dtls-peers}
cache=$cache_root/wolfssl-$WOLFSSL_VERSION
stamp=$cache/.dtls-peer-stamp
client=$cache/examples/client/client
server=$cache/examples/server/server
stamp_text="wolfssl $WOLFSSL_VERSION from wolfssl-sys $WOLFSSL_SYS_VERSION; configure ${CONFIGURE_FLAGS[*]}"

print_paths() {
    printf 'DTLS_WOLFSSL_CLIENT=%s\n' "$client"
    printf 'DTLS_WOLFSSL_SERVER=%s\n' "$server"
}

built() {
    [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$stamp_text" ] && [ -x "$client" ] && [ -x "$server" ]
}

if built; then
    print_paths
    exit 0
fi

mkdir -p "$cache_root"
# One build at a time (parallel test runs share the cache).
exec 9>"$cache_root/wolfssl-$WOLFSSL_VERSION.lock"
flock 9
if built; then
    print_paths
    exit 0
fi

# --- tools -----------------------------------------------------------------------------------
need_apt=()
command -v autoreconf >/dev/null 2>&1 || need_apt+=(autoconf)
command -v automake >/dev/null 2>&1 || need_apt+=(automake)
command -v libtoolize >/dev/null 2>&1 || need_apt+=(libtool)
command -v make >/dev/null 2>&1 || need_apt+=(make)
command -v cc >/dev/null 2>&1 || need_apt+=(gcc)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
if ((${#need_apt[@]})); then
    if [ "$(id -u)" -ne 0 ]; then
        die "missing ${need_apt[*]} and not root; install them: apt-get install -y ${need_apt[*]}"
    fi
    log "installing ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq "${need_apt[@]}" >&2
fi
command -v cargo >/dev/null 2>&1 || die "cargo not found (it fetches the wolfSSL source)"

# --- source ----------------------------------------------------------------------------------
cargo_home=${CARGO_HOME:-$HOME/.cargo}
find_source() {
    local d
    for d in "$cargo_home"/registry/src/*/wolfssl-sys-"$WOLFSSL_SYS_VERSION"/wolfssl-src; do
        if [ -f "$d/configure.ac" ]; then
            printf '%s\n' "$d"
            return 0
        fi
    done
    return 1
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if ! src=$(find_source); then
    log "fetching wolfssl-sys $WOLFSSL_SYS_VERSION with cargo"
    mkdir -p "$tmp/fetch/src"
    cat >"$tmp/fetch/Cargo.toml" <<EOF
[package]
name = "dtls-wolfssl-peer-fetch"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
wolfssl-sys = "=$WOLFSSL_SYS_VERSION"

[workspace]
EOF
    : >"$tmp/fetch/src/lib.rs"
    cargo fetch --manifest-path "$tmp/fetch/Cargo.toml" >&2 ||
        die "cargo fetch of wolfssl-sys $WOLFSSL_SYS_VERSION failed (is the crates registry reachable?)"
    if ! src=$(find_source); then
        # Older cargo versions leave the downloaded crate packed until a build needs it.
        crate=$(ls "$cargo_home"/registry/cache/*/wolfssl-sys-"$WOLFSSL_SYS_VERSION".crate 2>/dev/null | head -n 1)
        [ -n "$crate" ] || die "wolfssl-sys $WOLFSSL_SYS_VERSION not found under $cargo_home/registry after cargo fetch"
        tar -xzf "$crate" -C "$tmp"
        src=$tmp/wolfssl-sys-$WOLFSSL_SYS_VERSION/wolfssl-src
        [ -f "$src/configure.ac" ] || die "$crate holds no wolfssl-src/configure.ac"
    fi
fi
grep -q "\[$WOLFSSL_VERSION\]" "$src/configure.ac" ||
    die "$src is not wolfSSL $WOLFSSL_VERSION"

# --- build -----------------------------------------------------------------------------------
start=$(date +%s)
log "building wolfSSL $WOLFSSL_VERSION examples in $cache (takes minutes, once)"
rm -rf "$cache"
mkdir -p "$cache"
cp -R "$src"/. "$cache"/
chmod -R u+w "$cache"
(
    cd "$cache"
    ./autogen.sh
    ./configure "${CONFIGURE_FLAGS[@]}"
    make -j"$(nproc)" examples/server/server examples/client/client
    # The crate's copy lacks the top-level certs/*.pem; the examples look for
    # certs/dh2048.pem to find their root directory (tests pass their own PKI with -c -k -A).
    openssl dhparam -dsaparam -out certs/dh2048.pem 2048
) >"$cache/build.log" 2>&1 || {
    tail -n 40 "$cache/build.log" >&2
    die "wolfSSL build failed; full log: $cache/build.log"
}
[ -x "$client" ] && [ -x "$server" ] || die "build finished without $client and $server"
printf '%s\n' "$stamp_text" >"$stamp"
log "built in $(($(date +%s) - start)) s"
print_paths
