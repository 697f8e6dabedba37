# Row 10 of scripts/bench.sh, sourced by it: a media scanner's pass over a library (issue 17).
# 200 five-minute tracks, 20 ms from the CDN, cold; `ffprobe` over every track in turn, as a
# scanner does: seconds, and CDN bytes per track, trackfs against `rclone mount` of the
# rclone-crypt copy. Uses bench.sh's globals and helpers; everything it starts goes to
# $W/pids (and $W/mounts) for bench.sh's cleanup.
#
# Fair latency: both contenders reach one private nginx (the trackfs library's audio/ and the
# rclone-crypt folder) through one scripts/wan_proxy.py with 10 ms each way (a round trip
# costs 20 ms, a new connection one more) and a link far faster than needed (10 GB/s), so
# only the delay matters. trackfs's origin is `serve --latency 20` (its API calls cost 20 ms
# too) with that CDN. Bytes per track: the proxy counts what each contender pulled (response
# bodies and headers); trackfs's own `bytes_fetched` (bodies only) is recorded beside it.
# shellcheck shell=bash
# shellcheck disable=SC2016,SC2034,SC2154

N_SCAN=200 SCAN_SECONDS=300 SCAN_DELAY_MS=10
if ((BIG_MIB < 256)); then N_SCAN=20; fi # --quick

# The library: one five-minute MP3 (a tone, 128 kb/s, ~4.8 MB) made once, then copied with
# other tags (stream copy, so every track differs and each is a whole, valid file), 10 a
# folder as `Scan Artist NN/Album NN/NN Track NNN.mp3`.
row10_make_library() {
  local src=$W/src-scan base=$W/scan-base.mp3 i a t
  ffmpeg -v error -f lavfi -i "sine=f=440:d=$SCAN_SECONDS" -ac 2 -c:a libmp3lame -b:a 128k "$base"
  for ((i = 1; i <= N_SCAN; i++)); do
    a=$(((i - 1) / 10 + 1)) t=$(((i - 1) % 10 + 1))
    printf '%s\0' "$i" "$a" "$t" "$(printf '%s/Scan Artist %02d/Album %02d/%02d Track %03d.mp3' "$src" "$a" "$a" "$t" "$i")"
  done | xargs -0 -n4 -P2 sh -c 'mkdir -p "$(dirname "$4")" &&
    ffmpeg -v error -i "$0" -c copy -metadata title="Track $1" -metadata artist="Scan Artist $2" \
      -metadata album="Album $2" -metadata track="$3" "$4"' "$base"
  rm -f "$base"
}

# "DOWN" bytes the proxy carried to clients since the last call (SIGUSR1 starts a new count).
row10_proxy_bytes() {
  local file=$W/scan-proxy.jsonl before=0
  [[ -f $file ]] && before=$(wc -l <"$file")
  kill -USR1 "$SCAN_PROXY_PID"
  for _ in $(seq 100); do
    [[ -f $file ]] && (($(wc -l <"$file") > before)) && break
    sleep 0.02
  done
  tail -1 "$W/scan-proxy.jsonl" | python3 -c 'import json, sys; print(json.load(sys.stdin)["bytes_down"])'
}

# ffprobe over every track below DIR, one after another in path order: prints seconds.
row10_scan() { # DIR LOG
  local t0 n
  t0=$(now)
  find "$1" -name '*.mp3' -print0 | sort -z |
    T 1800 xargs -0 -n1 ffprobe -v error -show_entries format=duration -of csv=p=0 >"$2"
  n=$(grep -c . "$2" || true)
  ((n == N_SCAN)) || die "ffprobe gave $n durations, expected $N_SCAN"
  awk '$1 < 299 || $1 > 301 { bad++ } END { exit bad > 0 }' "$2" || die "wrong durations in $2"
  elapsed "$t0" "$(now)"
}

row10_trackfs() {
  local s
  drop_caches
  mount_trackfs "$SCAN_SERVE_PORT" scan "$W/lib-scan"
  row10_proxy_bytes >/dev/null
  s=$(row10_scan "$MNT" "$W/logs/scan-trackfs.txt")
  record tfs_scan_s "$s"
  record tfs_scan_mib_per_track "$(awk -v b="$(row10_proxy_bytes)" -v n="$N_SCAN" 'BEGIN { printf "%.2f", b / n / 1048576 }')"
  record tfs_scan_fetched_mib_per_track "$(awk -v n="$N_SCAN" '$1 == "bytes_fetched" { printf "%.2f", $2 / n / 1048576 }' "$MNT/.trackfs/stats")"
  record tfs_scan_tracks_per_s "$(awk -v s="$s" -v n="$N_SCAN" 'BEGIN { printf "%.2f", n / s }')"
  umount_wait "$MNT" "$MOUNT_PID"
}

# The floor: the same ffprobe pass over the plaintext on the local disk (page cache dropped).
# ffprobe's own start-up and parsing is most of a scan's time when the network is quick.
row10_local() {
  drop_caches
  record local_scan_s "$(row10_scan "$W/src-scan" "$W/logs/scan-local.txt")"
}

row10_rclone() {
  local s
  drop_caches
  mount_rclone scan scancrypt
  row10_proxy_bytes >/dev/null
  s=$(row10_scan "$MNT" "$W/logs/scan-rclone.txt")
  record rclone_scan_s "$s"
  record rclone_scan_mib_per_track "$(awk -v b="$(row10_proxy_bytes)" -v n="$N_SCAN" 'BEGIN { printf "%.2f", b / n / 1048576 }')"
  record rclone_scan_tracks_per_s "$(awk -v s="$s" -v n="$N_SCAN" 'BEGIN { printf "%.2f", n / s }')"
  umount_wait "$MNT" "$MOUNT_PID"
}

# Everything both contenders need, in a row of its own (a failure stops only row 10): the
# library, its rclone-crypt copy, nginx, the proxy and `serve`. What the scans need is left in
# $W/row10.env.
row10_setup() {
  local nginx_port proxy_port proxy_pid nginx_pid lg
  row10_make_library
  "$TRACKFS" publish --no-progress "$W/src-scan" "$W/lib-scan" >"$W/logs/publish-scan.log" 2>&1 ||
    { tail -20 "$W/logs/publish-scan.log" >&2; die "trackfs publish (scan library) failed"; }
  nginx_port=$(free_port)
  proxy_port=$(free_port)
  rclone_crypt_copy "$W/src-scan" "$W/crypt-scan" lcryptscan
  rclone_crypt_remote scancrypt "http://127.0.0.1:$proxy_port/crypt/"
  note "library: $(du -sh "$W/src-scan" | cut -f1) of MP3s, published and rclone-crypted"

  nginx_pid=$("$scripts/nginx-cdn.sh" "$W/lib-scan" "$nginx_port" --dir /crypt/="$W/crypt-scan" \
    2>"$W/logs/nginx-scan.log") || { cat "$W/logs/nginx-scan.log" >&2; die "nginx (scan) did not start"; }
  echo "$nginx_pid" >>"$W/pids"
  lg=$W/logs/scan-proxy.log
  python3 "$scripts/wan_proxy.py" --upstream "127.0.0.1:$nginx_port" \
    --listen "127.0.0.1:$proxy_port" --link-mbs 10000 --conn-mbs 10000 \
    --delay-ms "$SCAN_DELAY_MS" --stats "$W/scan-proxy.jsonl" >"$lg" 2>&1 &
  proxy_pid=$!
  echo "$proxy_pid" >>"$W/pids"
  wait_port "$proxy_port" "$proxy_pid" "$lg"
  start_serve "$W/lib-scan" --latency $((2 * SCAN_DELAY_MS)) --cdn-base "http://127.0.0.1:$proxy_port"
  echo "SCAN_NGINX_PID=$nginx_pid SCAN_PROXY_PID=$proxy_pid SCAN_SERVE_PORT=$SERVE_PORT" >"$W/row10.env"
}

row10_run() {
  local how="ffprobe of each track in turn, $((2 * SCAN_DELAY_MS)) ms round trips, cold"
  run_row "10. a ${N_SCAN}-track library of ${SCAN_SECONDS}-second MP3s, nginx and a 20 ms proxy" row10_setup
  [[ -f $W/row10.env ]] || return 0
  # shellcheck disable=SC1091
  source "$W/row10.env"
  if ((TFS)); then run_row "10. trackfs: library scan of $N_SCAN tracks ($how)" row10_trackfs; fi
  run_row "10. rclone-crypt: library scan of $N_SCAN tracks ($how)" row10_rclone
  run_row "10. the same ffprobe pass over the local plaintext (the floor)" row10_local
  "$scripts/nginx-cdn.sh" --stop "$SCAN_NGINX_PID" 2>/dev/null || true
}

# Speed as tracks per second, so `line`'s ratio (ours / peer) is rclone's seconds / trackfs's.
row10_table() {
  line "10. scan of $N_SCAN tracks (ffprobe), tracks/s" tracks/s "$(get tfs_scan_tracks_per_s)" "$(get rclone_scan_tracks_per_s)" "rclone-crypt" ratio_ge 5
  line "10. (the same, seconds)" s "$(get tfs_scan_s)" "$(get rclone_scan_s)" "rclone-crypt" info ""
  line "10. (ffprobe of the local plaintext, s)" s "$(get tfs_scan_s)" "$(get local_scan_s)" "local disk" info ""
  line "10. CDN MiB per track (at the proxy)" MiB "$(get tfs_scan_mib_per_track)" "$(get rclone_scan_mib_per_track)" "rclone-crypt" le 1
  line "10. (trackfs bytes_fetched per track)" MiB "$(get tfs_scan_fetched_mib_per_track)" "" "" info ""
}
