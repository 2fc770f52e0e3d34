#!/usr/bin/env bash
# Installs what ffcluster's tests and demo need on Debian/Ubuntu, when missing:
# ffmpeg and ffprobe from the distribution's packages, and Chromium for the
# dashboard test (tests/dashboard.rs runs /usr/bin/chromium headless; on Ubuntu
# the `chromium` package is a snap stub, so use Debian or install it another
# way). Also hls.js for the player test (tests/player.rs), from the npm registry
# at the version pinned in tests/player/package-lock.json (`npm ci`, with
# npm, from the distribution when missing). Safe to run repeatedly.
set -euo pipefail

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
if [ ${#need[@]} -eq 0 ]; then ensure_hlsjs; exit 0; fi

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
