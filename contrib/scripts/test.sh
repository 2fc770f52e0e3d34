#!/usr/bin/env bash
# The project's test command (the README's second command): installs ffmpeg when
# missing, builds every binary the black-box tests start, runs all tests.
set -euo pipefail
cd "$(dirname "$0")/../.."
contrib/scripts/ensure-deps.sh
cargo build --workspace --all-targets --locked
cargo test --workspace --locked "$@"
