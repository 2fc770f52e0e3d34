#!/usr/bin/env bash
# The project's test command (the README's second command): installs ffmpeg when
# missing, builds every binary the black-box tests start, runs all tests against
# the distribution's ffmpeg, then a representative subset against each other
# ffmpeg release Jellyfin ships (7.1 and 8.1, installed by ensure-deps.sh).
# With arguments (a test filter, say), only the first run, with them.
set -euo pipefail
cd "$(dirname "$0")/../.."
contrib/scripts/ensure-deps.sh
cargo build --workspace --all-targets --locked
# Library, binary and integration tests (benches are programs, run separately).
cargo test --workspace --locked --lib --bins --tests "$@"
[ $# -eq 0 ] || exit 0

# The subset: where the product meets ffmpeg's version. Whole jobs and the
# keys (cluster), split jobs and their finisher (split), the HLS outputs of
# the film and a TV recording compared packet by packet with direct ffmpeg
# (exactness), and Jellyfin's own command lines (jellyfin). About 3 minutes per
# version on 2 cores; the full suite on each would add 25.
versions_root="${FFCLUSTER_FFMPEG_VERSIONS_ROOT:-/opt/ffcluster}"
for version in 7.1 8.1; do
  dir="$versions_root/ffmpeg-$version/bin"
  echo "test.sh: the subset against ffmpeg $version ($dir)" >&2
  # PATH too, for the few tests that let the shim search PATH itself.
  FFCLUSTER_TEST_FFMPEG_DIR="$dir" PATH="$dir:$PATH" \
    FFCLUSTER_EXACTNESS_ONLY="film_mkv × hls_,tv_h264_ts × hls_" \
    cargo test --locked --test cluster --test split --test jellyfin --test exactness
done
