#!/usr/bin/env bash
# Builds the release binaries and runs `ffcluster bench split` (contrib/docs/benchmarks.md):
# one Jellyfin HLS transcode directly and through 1, 2 and 4 local nodes, each under
# the same cgroup CPU quota (run as root). Extra arguments go to the command.
set -euo pipefail
cd "$(dirname "$0")/../.."
contrib/scripts/ensure-deps.sh
cargo build --release --locked --workspace --bins
exec target/release/ffcluster bench split "$@"
