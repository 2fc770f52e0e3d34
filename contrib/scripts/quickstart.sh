#!/usr/bin/env bash
# The README's first command: builds ffcluster, installs ffmpeg when missing, and
# runs a Jellyfin 10.11-style HLS transcode through the shim on a generated clip,
# then checks the result by decoding it.
#
# Today the shim runs such a job locally (the controller and node agents are not
# built yet); `ffcluster explain` shows what it will do with a cluster.
set -euo pipefail
cd "$(dirname "$0")/../.."
contrib/scripts/ensure-deps.sh
cargo build --release --locked -p ffcluster -p ffcluster-shim

work="${FFCLUSTER_DEMO_DIR:-$(mktemp -d -t ffcluster-demo.XXXXXX)}"
mkdir -p "$work/bin" "$work/transcodes"
ln -sf "$PWD/target/release/ffcluster-shim" "$work/bin/ffmpeg"
ln -sf "$PWD/target/release/ffcluster-shim" "$work/bin/ffprobe"
export FFCLUSTER_LOG="$work/shim.log"

echo "==> generating a 12 s 720p clip with 5.1 audio"
ffmpeg -hide_banner -loglevel error -y \
  -f lavfi -i "testsrc2=size=1280x720:rate=24000/1001:duration=12" \
  -f lavfi -i "sine=frequency=440:duration=12" \
  -filter_complex "[1:a]pan=5.1|c0=c0|c1=c0|c2=c0|c3=c0|c4=c0|c5=c0[a]" -map 0:v -map "[a]" \
  -c:v libx264 -preset veryfast -g 48 -c:a ac3 "$work/movie.mkv"

md5=0f1e2d3c4b5a69788796a5b4c3d2e1f0
args=(-analyzeduration 200M -probesize 1G -i "file:$work/movie.mkv" -map_metadata -1 -map_chapters -1 -threads 0
  -map 0:0 -map 0:1 -map -0:s -codec:v:0 libx264 -preset veryfast -crf 23 -maxrate 8000000 -bufsize 16000000
  -profile:v:0 high -level 41 -x264opts:0 subme=0:me_range=16:rc_lookahead=10:me=hex:open_gop=0
  -force_key_frames:0 "expr:gte(t,n_forced*3)" -sc_threshold:v:0 0
  -vf "setparams=color_primaries=bt709:color_trc=bt709:colorspace=bt709,scale=trunc(min(max(iw\,ih*a)\,min(1280\,720*a))/2)*2:trunc(min(max(iw/a\,ih)\,min(1280/a\,720))/2)*2,format=yuv420p"
  -codec:a:0 aac -ac 2 -ab 256000 -af "volume=2" -copyts -avoid_negative_ts disabled -max_muxing_queue_size 2048
  -f hls -max_delay 5000000 -hls_time 3 -hls_segment_type mpegts -start_number 0
  -hls_segment_filename "$work/transcodes/$md5%d.ts" -hls_playlist_type vod -hls_list_size 0 -y "$work/transcodes/$md5.m3u8")

echo "==> what the shim decides (ffcluster explain)"
target/release/ffcluster explain -- "${args[@]}" | grep -E '^(output|decision|needs)'

echo "==> transcoding through the shim ($work/bin/ffmpeg)"
start=$(date +%s%N)
"$work/bin/ffmpeg" -hide_banner -loglevel error -stats "${args[@]}"
echo
end=$(date +%s%N)

echo "==> checking the output by decoding it"
segments=$(ls "$work/transcodes"/$md5*.ts | wc -l)
frames=$("$work/bin/ffprobe" -v error -count_frames -select_streams v:0 -show_entries stream=nb_read_frames -of csv=p=0 "$work/transcodes/$md5.m3u8" | head -n 1)
errors=$(ffmpeg -v error -i "$work/transcodes/$md5.m3u8" -f null - 2>&1 | wc -l)
[ "$segments" -eq 4 ] && [ "$frames" -eq 288 ] && [ "$errors" -eq 0 ] || {
  echo "FAILED: $segments segments (want 4), $frames frames (want 288), $errors decode errors" >&2; exit 1; }
ms=$(( (end - start) / 1000000 ))
printf 'OK: %s segments, %s frames, no decode errors, %d.%03d s for 12 s of video\n' "$segments" "$frames" $((ms / 1000)) $((ms % 1000))
echo "    output:    $work/transcodes/$md5.m3u8"
echo "    shim log:  $FFCLUSTER_LOG"
echo
echo "To use it with Jellyfin: point Jellyfin's ffmpeg path at a directory holding both links,"
echo "  ln -s $PWD/target/release/ffcluster-shim /usr/local/lib/ffcluster/ffmpeg"
echo "  ln -s $PWD/target/release/ffcluster-shim /usr/local/lib/ffcluster/ffprobe"
echo "and start Jellyfin with JELLYFIN_FFMPEG=/usr/local/lib/ffcluster/ffmpeg (or --ffmpeg)."
