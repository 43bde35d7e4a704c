#!/usr/bin/env bash
# Smoke-runs every cargo-fuzz target in the repository.
#
# Usage: scripts/fuzz-smoke.sh [SECONDS_PER_TARGET] [FUZZ_DIR...]
#   SECONDS_PER_TARGET  default 20
#   FUZZ_DIR            default: every */fuzz and */*/fuzz directory with a Cargo.toml
#
# For each fuzz crate it builds all targets, then runs each for the given time; it
# exits non-zero if a build fails or any target finds a crash (the reproducer is left
# in <fuzz dir>/artifacts/<target>/). cargo-fuzz is installed when missing. Seed inputs
# are read from <fuzz dir>/seeds/<target>/ when that directory exists.
#
# Environment:
#   FUZZ_TARGET_DIR   cargo target dir (default <repo>/target/fuzz)
#   FUZZ_SANITIZER    address | none ... (default none: our fuzzed crates forbid unsafe
#                     code, so ASan adds cost but finds nothing the Rust checks miss;
#                     debug assertions and overflow checks stay on)
#   FUZZ_TOOLCHAIN    rustup toolchain to use (default: nightly if installed, else the
#                     default toolchain); any non-nightly toolchain runs with
#                     RUSTC_BOOTSTRAP=1, as cargo-fuzz needs -Z flags
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
secs=${1:-20}
[[ $# -gt 0 ]] && shift
case $secs in '' | *[!0-9]*) echo "fuzz-smoke: SECONDS must be a number, got '$secs'" >&2; exit 2 ;; esac

if [[ $# -gt 0 ]]; then
    dirs=("$@")
else
    mapfile -t dirs < <(
        find "$root" -mindepth 3 -maxdepth 4 -path "$root/target" -prune -o \
            -type f -path '*/fuzz/Cargo.toml' -print | xargs -r -n1 dirname | sort
    )
fi
if [[ ${#dirs[@]} -eq 0 ]]; then
    echo "fuzz-smoke: no fuzz directories found" >&2
    exit 1
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

toolchain=${FUZZ_TOOLCHAIN:-}
if [[ -z $toolchain ]] && command -v rustup >/dev/null 2>&1 &&
    rustup toolchain list | grep -q '^nightly'; then
    toolchain=nightly
fi
fuzz=(cargo)
[[ -n $toolchain ]] && fuzz+=("+$toolchain")
fuzz+=(fuzz)
# cargo-fuzz passes -Z flags to rustc; on a non-nightly toolchain allow them.
[[ $toolchain == nightly* ]] || fuzz=(env RUSTC_BOOTSTRAP=1 "${fuzz[@]}")
sanitizer=${FUZZ_SANITIZER:-none}
target_dir=${FUZZ_TARGET_DIR:-$root/target/fuzz}

failed=()
for dir in "${dirs[@]}"; do
    dir=$(cd "$dir" && pwd)
    parent=$(dirname "$dir")
    echo "== fuzz crate $dir (toolchain ${toolchain:-default}, sanitizer $sanitizer)"
    if ! (cd "$parent" && "${fuzz[@]}" build --fuzz-dir "$dir" -s "$sanitizer" \
        --target-dir "$target_dir"); then
        failed+=("$dir (build)")
        continue
    fi
    mapfile -t targets < <(cd "$parent" && "${fuzz[@]}" list --fuzz-dir "$dir")
    for t in "${targets[@]}"; do
        echo "-- $t: ${secs}s"
        # New inputs go to the (git-ignored) corpus; checked-in seeds/<target>/ are read too.
        corpora=("$dir/corpus/$t")
        mkdir -p "${corpora[0]}"
        [[ -d "$dir/seeds/$t" ]] && corpora+=("$dir/seeds/$t")
        if (cd "$parent" && "${fuzz[@]}" run --fuzz-dir "$dir" -s "$sanitizer" \
            --target-dir "$target_dir" "$t" "${corpora[@]}" -- \
            -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
            2>"$target_dir/fuzz-$t.log"); then
            grep -E '^(stat::number_of_executed_units|Done)' "$target_dir/fuzz-$t.log" || true
        else
            tail -n 40 "$target_dir/fuzz-$t.log" >&2
            failed+=("$dir:$t")
        fi
    done
done

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz-smoke: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz-smoke: all targets ran ${secs}s without crashes"
