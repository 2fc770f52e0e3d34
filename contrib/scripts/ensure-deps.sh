#!/usr/bin/env bash
# Installs what ffcluster's tests and demo need on Debian/Ubuntu, when missing:
# ffmpeg and ffprobe from the distribution's packages, and Chromium for the
# dashboard test (tests/dashboard.rs runs /usr/bin/chromium headless; on Ubuntu
# the `chromium` package is a snap stub, so use Debian or install it another
# way). Safe to run repeatedly.
set -euo pipefail

need=()
command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1 || need+=(ffmpeg)
[ -x /usr/bin/chromium ] || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0

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
command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null && [ -x /usr/bin/chromium ]
