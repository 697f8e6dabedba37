# Row 8 of scripts/bench.sh, sourced by it: the disk cache (issue 15). Uses bench.sh's globals
# and helpers; everything it starts goes to $W/pids or $W/mounts for bench.sh's cleanup.
#   a. re-listen after a remount, page caches dropped, CDN stopped: trackfs reads the big
#      track once with a disk cache (through a nginx of its own, behind a serve of its own),
#      unmounts; that nginx is stopped; then (x REPEAT_ROW8) remount, drop caches, read again:
#      MB/s and the CDN requests the mount made (stats `cdn_requests`, which counts attempts:
#      with the CDN down, any would show). Against `rclone mount --vfs-cache-mode full` with a
#      cache dir of its own: read once, then (x REPEAT_ROW8) remount, drop caches, re-read, CDN
#      up (rclone cannot start without its remote); the requests its re-reads made are counted
#      in the shared nginx's access log.
#   b. the cold read of the big track with a fresh disk cache writing vs `--disk-cache off`,
#      alternating, REPEAT_ROW8_COLD each: medians (five: a cold read here swings between
#      ~500 and ~1,100 MB/s for either setup, and three pairs let one swing decide the ratio).
#   c. peak RSS (VmHWM) of the mounts of b: the highest with the disk tier and without.
# shellcheck shell=bash
# shellcheck disable=SC2016,SC2034,SC2154

REPEAT_ROW8=3
REPEAT_ROW8_COLD=5

# The access log of a nginx started by nginx-cdn.sh: its prefix is on its command line.
nginx_access_log() { # PID
  tr '\0' ' ' <"/proc/$1/cmdline" | sed -n 's/.* -p \([^ ]*\) .*/\1\/access.log/p'
}
count_lines() { # FILE PATTERN
  grep -c -- "$2" "$1" 2>/dev/null || true
}
peak_rss_mib() { awk '/^VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
mount_stat() { # MOUNTPOINT NAME
  awk -v k="$2" '$1 == k { print $2 }' "$1/.trackfs/stats"
}

row8_relisten_trackfs() {
  local port8 nginx8 cdn8 dc=$W/row8-disk-cache f runs=() reqs=() hits=()
  port8=$(free_port)
  nginx8=$("$scripts/nginx-cdn.sh" "$W/lib" "$port8" 2>"$W/logs/nginx-row8.log") ||
    { cat "$W/logs/nginx-row8.log" >&2; die "row 8's nginx did not start"; }
  echo "$nginx8" >>"$W/pids"
  cdn8=http://127.0.0.1:$port8
  start_serve "$W/lib" --cdn-base "$cdn8"
  drop_caches
  mount_trackfs "$SERVE_PORT" relisten0 "$W/lib" --disk-cache "$dc"
  f=$(tfs_path "$MNT" "$BIG_BYTES")
  [[ -n $f ]] || die "the big track is not in the mount"
  note "first read (fills the disk cache): $(seq_read "$f") MB/s"
  umount_wait "$MNT" "$MOUNT_PID"
  note "disk cache after it: $(du -sh "$dc" | cut -f1)"
  "$scripts/nginx-cdn.sh" --stop "$nginx8"
  if (exec 3<>"/dev/tcp/127.0.0.1/$port8") 2>/dev/null; then die "row 8's CDN still answers"; fi
  for i in $(seq "$REPEAT_ROW8"); do
    mount_trackfs "$SERVE_PORT" "relisten$i" "$W/lib" --disk-cache "$dc"
    drop_caches
    f=$(tfs_path "$MNT" "$BIG_BYTES")
    runs+=("$(seq_read "$f")")
    reqs+=("$(mount_stat "$MNT" cdn_requests)")
    hits+=("$(mount_stat "$MNT" disk_hits)")
    "$TRACKFS" stats "$MNT" >"$W/logs/stats-row8-relisten$i.txt" 2>&1 || true
    umount_wait "$MNT" "$MOUNT_PID"
  done
  note "trackfs re-reads, MB/s: ${runs[*]}; CDN requests: ${reqs[*]}; disk hits: ${hits[*]}"
  measure tfs_relisten_mbs python3 "$helper" median "${runs[@]}"
  record tfs_relisten_cdn_requests "$(printf '%s\n' "${reqs[@]}" | awk '{ s += $1 } END { print s + 0 }')"
}

# mount_rclone with a VFS cache of its own (bench_lib's is the out-of-the-box setup).
row8_mount_rclone() { # NAME CACHE_DIR
  local mnt=$W/mnt/$1 lg
  lg=$W/logs/rclone-$1-$(date +%s%N).log
  mkdir -p "$mnt"
  echo "$mnt" >>"$W/mounts"
  rclone --config "$W/rclone.conf" mount wcrypt: "$mnt" --vfs-cache-mode full \
    --cache-dir "$2" >"$lg" 2>&1 &
  MOUNT_PID=$!
  echo "$MOUNT_PID" >>"$W/pids"
  wait_mounted "$mnt" "$MOUNT_PID" "$lg"
  MNT=$mnt
}
row8_relisten_rclone() {
  local cache=$W/row8-rclone-cache log before runs=() reqs=()
  log=$(nginx_access_log "$NGINX_PID")
  [[ -f $log ]] || die "no access log for the shared nginx ($log)"
  drop_caches
  row8_mount_rclone relisten0 "$cache"
  note "rclone first read (fills its cache): $(seq_read "$MNT/$BIG_REL") MB/s"
  umount_wait "$MNT" "$MOUNT_PID"
  note "rclone cache after it: $(du -sh "$cache" | cut -f1)"
  for i in $(seq "$REPEAT_ROW8"); do
    row8_mount_rclone "relisten$i" "$cache"
    drop_caches
    before=$(count_lines "$log" ' "GET /crypt/')
    runs+=("$(seq_read "$MNT/$BIG_REL")")
    reqs+=($(($(count_lines "$log" ' "GET /crypt/') - before)))
    umount_wait "$MNT" "$MOUNT_PID"
  done
  note "rclone re-reads, MB/s: ${runs[*]}; requests to nginx (/crypt/): ${reqs[*]}"
  measure rclone_relisten_mbs python3 "$helper" median "${runs[@]}"
  record rclone_relisten_requests "$(printf '%s\n' "${reqs[@]}" | awk '{ s += $1 } END { print s + 0 }')"
}

# b and c: cold reads, alternating so that load from elsewhere hits both alike.
row8_cold() {
  local dc f on=() off=() rss_on=() rss_off=() written=()
  for i in $(seq "$REPEAT_ROW8_COLD"); do
    drop_caches
    mount_trackfs "$PORT_FAST" "nodisk$i" "$W/lib" --disk-cache off
    f=$(tfs_path "$MNT" "$BIG_BYTES")
    off+=("$(seq_read "$f")")
    rss_off+=("$(peak_rss_mib "$MOUNT_PID")")
    umount_wait "$MNT" "$MOUNT_PID"
    dc=$W/row8-cold-cache-$i
    drop_caches
    mount_trackfs "$PORT_FAST" "disk$i" "$W/lib" --disk-cache "$dc"
    f=$(tfs_path "$MNT" "$BIG_BYTES")
    on+=("$(seq_read "$f")")
    rss_on+=("$(peak_rss_mib "$MOUNT_PID")")
    written+=("$(mount_stat "$MNT" disk_bytes_written)")
    "$TRACKFS" stats "$MNT" >"$W/logs/stats-row8-disk$i.txt" 2>&1 || true
    umount_wait "$MNT" "$MOUNT_PID"
    rm -rf "$dc"
  done
  note "cold, disk cache writing, MB/s: ${on[*]} (bytes written by the end of the read: ${written[*]})"
  note "cold, --disk-cache off, MB/s: ${off[*]}"
  note "peak RSS MiB, with: ${rss_on[*]}; without: ${rss_off[*]}"
  measure tfs_cold_disk_mbs python3 "$helper" median "${on[@]}"
  measure tfs_cold_nodisk_mbs python3 "$helper" median "${off[@]}"
  record tfs_disk_rss_mib "$(printf '%s\n' "${rss_on[@]}" | sort -g | tail -1)"
  record tfs_nodisk_rss_mib "$(printf '%s\n' "${rss_off[@]}" | sort -g | tail -1)"
}

row8_run() {
  if ((TFS)); then
    run_row "8a. trackfs: re-listen after a remount, caches dropped, CDN stopped" row8_relisten_trackfs
  fi
  run_row "8a. rclone --vfs-cache-mode full: re-read after a remount, caches dropped" row8_relisten_rclone
  if ((TFS)); then
    run_row "8b/c. trackfs: cold read with the disk cache writing vs --disk-cache off" row8_cold
  fi
}

row8_table() {
  local on off diff=""
  on=$(get tfs_disk_rss_mib) off=$(get tfs_nodisk_rss_mib)
  if [[ -n $on && -n $off ]]; then
    diff=$(awk -v a="$on" -v b="$off" 'BEGIN { d = a - b; if (d < 0) d = -d; printf "%.1f", d }')
  fi
  line "8. re-listen, remount, caches dropped, MB/s" MB/s "$(get tfs_relisten_mbs)" "$(get rclone_relisten_mbs)" "rclone vfs full" ratio_ge 2
  line "8. CDN requests during the re-listens" n "$(get tfs_relisten_cdn_requests)" "$(get rclone_relisten_requests)" "rclone vfs full" le 0
  line "8. cold read, disk cache writing, MB/s" MB/s "$(get tfs_cold_disk_mbs)" "$(get tfs_cold_nodisk_mbs)" "--disk-cache off" ratio_ge 0.9
  line "8. peak RSS with / without the disk tier" MiB "$on" "$off" "--disk-cache off" info ""
  line "8. peak RSS difference, MiB" MiB "$diff" "" "" le 16
}
