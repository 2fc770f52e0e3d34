#!/usr/bin/env bash
# The project's test command (the README's second command): installs ffmpeg when
# missing, builds every binary the black-box tests start, runs all tests.
set -euo pipefail
cd "$(dirname "$0")/../.."
contrib/scripts/ensure-deps.sh
cargo build --workspace --all-targets --locked
# Library, binary and integration tests (benches are programs, run separately).
cargo test --workspace --locked --lib --bins --tests "$@"
