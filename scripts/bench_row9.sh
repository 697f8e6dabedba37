# Row 9 of scripts/bench.sh (issue 16), sourced by it: a big library, served with
# `serve --latency 20` (every request costs 20 ms), mounted with a fresh disk cache.
#   - cold: seconds from starting `trackfs mount` to the end of the first full `ls -R` (no
#     snapshot yet: the whole catalogue comes from the origin, one request per album and track)
#   - from the snapshot: the same on a second mount with the same --disk-cache folder (the
#     tree is the snapshot's at once; the mount revalidates it in the background)
#   - one quiet refresh (`trackfs refresh MOUNTPOINT`, nothing published since): seconds, and
#     the requests the origin logged meanwhile (`serve --log-level debug` logs one line a
#     request: a count that does not depend on the machine's load), once the size probes the
#     listings started are done
#   - one refresh after an album was added (published again): seconds and catalogue requests
# The library is many tiny tracks (scripts/bench_helper.py mklib: 10 tracks an album, 10
# albums an artist), so it is quick to make and publish; the figures are about the catalogue.
# shellcheck shell=bash
# shellcheck disable=SC2154

ROW9_TRACKS=20000 ROW9_BYTES=2048

# Requests `serve` logged so far ("GET /path -> 200 in 20.1ms" at debug level).
row9_requests() { grep -c ' -> [0-9]' "$1" || true; }
# Only those for the catalogue (token, library, albums, tracks, playlists).
row9_catalogue_requests() {
  grep -cE ' (GET|POST) /(keymaster|library|metadata|playlist)[^ ]* -> [0-9]' "$1" || true
}

# Until the origin has seen no request for a second: a listing starts learning the sizes of
# the tracks below it in the background (resolve, head file), which is not the refresh's.
row9_wait_quiet() { # SERVE_LOG
  local before after _
  for _ in $(seq 300); do
    before=$(row9_requests "$1")
    sleep 1
    after=$(row9_requests "$1")
    ((after != before)) || return 0
  done
  note "warning: the origin was still busy after 300 s"
}

# Until the mount's first refresh (it refreshes at once when it started from its snapshot)
# has run: the quiet refresh measured next must not queue behind it.
row9_wait_refreshed() { # MOUNTPOINT
  local _
  for _ in $(seq 600); do
    awk '$1 == "refreshes" && $2 >= 1 { f = 1 } END { exit !f }' "$1/.trackfs/stats" && return 0
    sleep 0.1
  done
  die "the mount's first refresh did not end within 60 s"
}

row9_trackfs() {
  local src=$W/src-row9 lib=$W/lib-row9 cache=$W/cache-row9 t0 t1 t2 t3 t4 n r0 r1 slog
  log "making a ${ROW9_TRACKS}-track library ($ROW9_BYTES bytes a track)"
  python3 "$helper" mklib "$src" "$ROW9_TRACKS" "$ROW9_BYTES"
  t0=$(now)
  "$TRACKFS" publish --no-progress "$src" "$lib" >"$W/logs/publish-row9.log" 2>&1 ||
    { tail -20 "$W/logs/publish-row9.log" >&2; die "trackfs publish (row 9 library) failed"; }
  note "published in $(elapsed "$t0" "$(now)") s"
  start_serve "$lib" --latency "$LATENCY_MS" --log-level debug
  local port=$SERVE_PORT
  slog=$W/logs/serve-$port.log
  rm -rf "$cache"
  mkdir -p "$cache"
  local flags=(--disk-cache "$cache" --refresh-interval off)

  drop_caches
  r0=$(row9_catalogue_requests "$slog")
  t0=$(now)
  mount_trackfs "$port" row9 "$lib" "${flags[@]}"
  T 600 ls -R "$MNT" >"$W/logs/ls-row9-cold.txt"
  t1=$(now)
  record tfs_big_cold_s "$(elapsed "$t0" "$t1")"
  record tfs_big_cold_reqs $(($(row9_catalogue_requests "$slog") - r0))
  n=$(grep -c '\.mp3$' "$W/logs/ls-row9-cold.txt" || true)
  ((n == ROW9_TRACKS)) || note "warning: ls -R listed $n tracks, expected $ROW9_TRACKS"
  # As a mount that was used for a while: the sizes it learned go into the snapshot.
  row9_wait_quiet "$slog"
  umount_wait "$MNT" "$MOUNT_PID"

  drop_caches
  t2=$(now)
  mount_trackfs "$port" row9 "$lib" "${flags[@]}"
  T 600 ls -R "$MNT" >"$W/logs/ls-row9-snapshot.txt"
  t3=$(now)
  record tfs_big_snapshot_s "$(elapsed "$t2" "$t3")"
  n=$(grep -c '\.mp3$' "$W/logs/ls-row9-snapshot.txt" || true)
  ((n == ROW9_TRACKS)) || note "warning: ls -R from the snapshot listed $n tracks, expected $ROW9_TRACKS"

  row9_wait_refreshed "$MNT"
  row9_wait_quiet "$slog"
  r0=$(row9_requests "$slog")
  t3=$(now)
  "$TRACKFS" refresh "$MNT" >"$W/logs/refresh-row9.txt" 2>&1 ||
    { cat "$W/logs/refresh-row9.txt" >&2; die "trackfs refresh failed"; }
  t4=$(now)
  r1=$(row9_requests "$slog")
  record tfs_big_refresh_s "$(elapsed "$t3" "$t4")"
  record tfs_big_refresh_reqs $((r1 - r0))
  note "trackfs refresh said: $(head -1 "$W/logs/refresh-row9.txt")"

  # What a change costs: one new album published, then one refresh. Every album and track is
  # revalidated (an album's 304 says nothing of its tracks' files), each a 304 but the new.
  python3 "$helper" mkmp3 "$src/Row9 New/Album/01 New.mp3" "$ROW9_BYTES" 9
  t0=$(now)
  "$TRACKFS" publish --no-progress "$src" "$lib" >"$W/logs/publish-row9-again.log" 2>&1 ||
    { tail -20 "$W/logs/publish-row9-again.log" >&2; die "trackfs publish (again) failed"; }
  note "published one new album in $(elapsed "$t0" "$(now)") s"
  r0=$(row9_catalogue_requests "$slog")
  t3=$(now)
  "$TRACKFS" refresh "$MNT" >"$W/logs/refresh-row9-changed.txt" 2>&1 ||
    { cat "$W/logs/refresh-row9-changed.txt" >&2; die "trackfs refresh (changed) failed"; }
  t4=$(now)
  record tfs_big_changed_s "$(elapsed "$t3" "$t4")"
  record tfs_big_changed_reqs $(($(row9_catalogue_requests "$slog") - r0))
  note "trackfs refresh said: $(head -1 "$W/logs/refresh-row9-changed.txt")"
  [[ -e "$MNT/Row9 New/Album/01 - New.mp3" ]] || note "warning: the new album is not in the mount"
  umount_wait "$MNT" "$MOUNT_PID"
}

row9_run() {
  ((TFS)) || return 0
  run_row "9. trackfs: ${ROW9_TRACKS}-track library, ${LATENCY_MS} ms latency: ls -R cold, from the snapshot, a quiet refresh" row9_trackfs
}

row9_table() {
  ((TFS)) || return 0
  line "9. ls -R cold (mount + ls), $ROW9_TRACKS tracks, s" s "$(get tfs_big_cold_s)" "" "" info ""
  line "9. (catalogue requests of that cold mount)" n "$(get tfs_big_cold_reqs)" "" "" info ""
  line "9. ls -R from the snapshot (mount + ls), s" s "$(get tfs_big_snapshot_s)" "" "" le 1
  line "9. quiet refresh (trackfs refresh), s" s "$(get tfs_big_refresh_s)" "" "" info ""
  line "9. quiet refresh, origin requests" n "$(get tfs_big_refresh_reqs)" "" "" le 1
  line "9. refresh after one album was added, s" s "$(get tfs_big_changed_s)" "" "" info ""
  line "9. (its catalogue requests, 304s but 2)" n "$(get tfs_big_changed_reqs)" "" "" info ""
}
