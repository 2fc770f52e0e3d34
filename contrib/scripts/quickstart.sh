#!/usr/bin/env bash
# The README's first command: installs ffmpeg when missing, builds ffcluster, and
# runs `ffcluster demo`: a controller and two node agents on loopback, a generated
# clip, Jellyfin 10.11's HLS command line through the shim, the result checked by
# decoding it. Extra arguments go to `ffcluster demo` (see `ffcluster demo --help`).
set -euo pipefail
cd "$(dirname "$0")/../.."
contrib/scripts/ensure-deps.sh
cargo build --release --locked --workspace --bins
exec target/release/ffcluster demo "$@"
