#!/bin/sh
# Entry point of Dockerfile.shim's installer target: copies the shim from
# /opt/ffcluster into DEST (default /target) as ffcluster-shim plus the ffmpeg and
# ffprobe symlinks Jellyfin needs side by side. The binary is replaced by rename,
# so a Jellyfin that is running the old one is not disturbed.
set -eu
dest="${1:-/target}"
src=/opt/ffcluster
[ -d "$dest" ] || { echo "install-shim: $dest is not a directory (mount a volume there)" >&2; exit 1; }
cp "$src/ffcluster-shim" "$dest/.ffcluster-shim.new"
chmod 0755 "$dest/.ffcluster-shim.new"
mv -f "$dest/.ffcluster-shim.new" "$dest/ffcluster-shim"
ln -sfn ffcluster-shim "$dest/ffmpeg"
ln -sfn ffcluster-shim "$dest/ffprobe"
echo "install-shim: installed into $dest:"
ls -l "$dest"
