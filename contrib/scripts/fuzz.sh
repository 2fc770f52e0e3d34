#!/usr/bin/env bash
# Fuzzes the ffmpeg argument parser (target `argv`) and the wire-protocol
# decoders (target `protocol`) with cargo-fuzz, SECONDS each (default 600).
#
#   contrib/scripts/fuzz.sh [SECONDS]
#
# Installs cargo-fuzz from crates.io when it is missing. Works on stable Rust:
# RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its nightly-only flags. The code under
# test has no `unsafe`, so it runs without a sanitizer but with debug
# assertions (overflow checks on). The corpus grows in contrib/fuzz/corpus/
# (ignored by git) from the committed seeds in contrib/fuzz/seeds/. A crash
# leaves its input in contrib/fuzz/artifacts/TARGET/ and makes this script exit
# non-zero; replay it with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir contrib/fuzz -s none -a TARGET ARTIFACT
#
# The build and the fuzzers run under `nice -n 19` (FUZZ_NICE to change it).
set -euo pipefail
cd "$(dirname "$0")/../.."

secs="${1:-600}"
case "$secs" in '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;; esac
nice_level="${FUZZ_NICE:-19}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
fuzz=(cargo fuzz run --fuzz-dir contrib/fuzz --sanitizer none --debug-assertions)
status=0
for target in argv protocol; do
    mkdir -p "contrib/fuzz/corpus/$target"
    echo "fuzz.sh: $target for ${secs}s" >&2
    if ! nice -n "$nice_level" "${fuzz[@]}" "$target" \
        "contrib/fuzz/corpus/$target" "contrib/fuzz/seeds/$target" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1; then
        echo "fuzz.sh: $target FAILED (see contrib/fuzz/artifacts/$target/)" >&2
        status=1
    fi
done
exit "$status"
