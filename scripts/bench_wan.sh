# Row 7 of scripts/bench.sh, sourced by it: the big track read through a WAN-like path
# (scripts/wan_proxy.py in front of the benchmark's nginx). Uses bench.sh's globals and
# helpers; everything it starts goes to $W/pids for bench.sh's cleanup.
# shellcheck shell=bash
# shellcheck disable=SC2016,SC2034,SC2154

# Starts the proxy on $PROXY_PORT (chosen before rclone.conf was written); sets WAN_CDN.
start_wan_proxy() {
  local lg=$W/logs/wan-proxy.log pid
  python3 "$scripts/wan_proxy.py" --upstream "127.0.0.1:$NGINX_PORT" \
    --listen "127.0.0.1:$PROXY_PORT" --link-mbs "$WAN_LINK_MBS" --conn-mbs "$WAN_CONN_MBS" \
    --delay-ms "$WAN_DELAY_MS" --stats "$W/wan-stats.jsonl" >"$lg" 2>&1 &
  pid=$!
  echo "$pid" >>"$W/pids"
  wait_port "$PROXY_PORT" "$pid" "$lg"
  PROXY_PID=$pid
  WAN_CDN=http://127.0.0.1:$PROXY_PORT
}

# wan_stats: "USED PEAK" since the last call: connections that carried bytes to the client
# (a mount may open some before the read, e.g. for tracks' first blocks, and reuse them), and
# the most open at once. Call it once before a measurement to start the count afresh.
wan_stats() {
  local before
  before=$(wc -l <"$W/wan-stats.jsonl" 2>/dev/null || echo 0)
  kill -USR1 "$PROXY_PID"
  for _ in $(seq 100); do
    (($(wc -l <"$W/wan-stats.jsonl" 2>/dev/null || echo 0) > before)) && break
    sleep 0.02
  done
  tail -1 "$W/wan-stats.jsonl" |
    python3 -c 'import json, sys; d = json.load(sys.stdin); print(d["used"], d["peak_open"])'
}
median_int() { python3 "$helper" median "$@" | awk '{ printf "%g", $1 }'; }

# N curl range requests at once, splitting the big ciphertext: prints aggregate MB/s.
par_curl() { # N
  local n=$1 part i t0 pids=()
  part=$((BIG_BYTES / n))
  t0=$(now)
  for ((i = 0; i < n; i++)); do
    T 600 curl -sf -o /dev/null -r "$((i * part))-$(((i + 1) * part - 1))" "$WAN_CDN/audio/$BIG_ID" &
    pids+=($!)
  done
  for i in "${pids[@]}"; do wait "$i"; done
  awk -v s=$((n * part)) -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", s / (b - a) / 1e6 }'
}

# Row 7 is about the path, not nginx's disk: the server's page cache is warm for every
# contender (an edge serves hot files from memory), and each client starts cold (a fresh mount
# without a disk cache; FUSE page cache is per mount).
warm_server() {
  cat "$W/lib/audio/$BIG_ID" >/dev/null
  find "$W/crypt" -type f -size +"$((BIG_BYTES / 2))"c -exec cat {} + >/dev/null
}
row7_link() {
  local runs=()
  warm_server
  for _ in $(seq "$REPEAT_ROW7"); do runs+=("$(par_curl 8)"); done
  note "8 curl ranges at once, MB/s: ${runs[*]}"
  measure link_wan_mbs python3 "$helper" median "${runs[@]}"
}
row7_trackfs() {
  local runs=() conns=() peaks=() f c
  warm_server
  for i in $(seq "$REPEAT_ROW7"); do
    mount_trackfs "$PORT_WAN" "wan$i" "$W/lib"
    f=$(tfs_path "$MNT" "$BIG_BYTES")
    [[ -n $f ]] || die "the big track is not in the mount"
    wan_stats >/dev/null
    runs+=("$(seq_read "$f")")
    c=$(wan_stats)
    conns+=("${c% *}") peaks+=("${c#* }")
    "$TRACKFS" stats "$MNT" >"$W/logs/stats-row7.txt" 2>&1 || true
    umount_wait "$MNT" "$MOUNT_PID"
  done
  note "trackfs WAN runs, MB/s: ${runs[*]}; connections used: ${conns[*]}; most open at once: ${peaks[*]}"
  measure tfs_wan_mbs python3 "$helper" median "${runs[@]}"
  record tfs_wan_conns "$(median_int "${conns[@]}")/$(median_int "${peaks[@]}")"
}
row7_rclone() {
  local c
  warm_server
  mount_rclone wan wancrypt
  wan_stats >/dev/null
  measure rclone_wan_mbs seq_read "$MNT/$BIG_REL"
  c=$(wan_stats)
  record rclone_wan_conns "${c% *}/${c#* }"
  umount_wait "$MNT" "$MOUNT_PID"
}
row7_curl() {
  warm_server
  measure curl_wan_mbs curl_read "$WAN_CDN"
}
