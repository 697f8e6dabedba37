#!/usr/bin/env bash
# trackfs side by side with `rclone mount` of an rclone-crypt remote and with raw `curl`,
# all on loopback through one private nginx; prints a table of figures, ratios and targets.
#
# Usage: scripts/bench.sh [--quick] [--rows 1,2,...,10] [--trackfs BIN] [--skip-trackfs] [--keep]
#   --quick          smaller data (64 MiB + 8 x 8 MiB, 200-track listing) for a smoke run
#   --rows LIST      only these rows (1 cold seq, 2 warm, 3 random, 4 first byte/seek,
#                    5 eight readers, 6 ls -lR, 7 WAN path, 8 disk cache, 9 big library,
#                    10 library scan); default all
#   --trackfs BIN    use this binary (default: `cargo build --release` of this repo)
#   --skip-trackfs   only the rclone/curl/local figures (trackfs still publishes the data)
#   --keep           keep the work folder (libraries, logs, nginx access log) afterwards
#   Exit status: 0 every target met, 3 some target missed, 1 a row could not run.
#   BENCH_DISK_CACHE=on (environment): mounts that do not choose a disk cache get a fresh,
#   empty one in the work folder instead of `--disk-cache off` (cold reads that also store)
#
# Rows (the targets of issues 5 and 15-18):
#   1. cold sequential read of the 256 MiB track, 1 MiB reads: trackfs, rclone-crypt, curl;
#      median of 5 cold runs each (3 with --quick); also the machine's busy CPU-seconds per
#      read, and the same read from a FUSE file that does no work (examples/fuse_ceiling.rs);
#      every FUSE contender is also read (cold, 5 more times) by `dd bs=1M`
#   2. warm re-read (same mount, nothing dropped) vs the plaintext from local page cache;
#      median of 3 re-reads each
#   3. fio randread 4 KiB psync, 10 s, cold: IOPS trackfs vs rclone
#   4. first byte after open() and after a seek to the middle, cold, `serve --latency 20`
#      (the origin's built-in CDN, so every round trip, CDN included, costs 20 ms): median of 3
#   5. eight 24 MiB tracks read at once, cold: aggregate MB/s, and trackfs peak RSS (VmHWM)
#      with --cache-size 64MiB, on a mount that served fio's random reads (as row 3) first
#   6. `ls -lR` of a 2,000-track library with `serve --latency 20`: cold and warm seconds
#   7. the big track through a WAN-like path in front of the same nginx
#      (scripts/wan_proxy.py: a 100 MB/s link shared by all connections, 16 MB/s for each
#      TCP connection, 10 ms each way; fresh mounts, nginx's page cache warm): trackfs
#      (median of 3, and how many connections carried its bytes), rclone-crypt and curl
#      once each (they are paced, so they vary little), and 8 parallel curl ranges (median
#      of 3), which shows the path itself reaches its link rate
# "Cold" = page cache dropped (echo 3 > /proc/sys/vm/drop_caches, needs root) and a fresh mount.
# MB/s are decimal megabytes (10^6 bytes) per second, like dd and curl.
#
# Why this shape: the ratios only mean something if both contenders read the same bytes from
# the same server on the same machine in the same run; everything here is made fresh, served
# on 127.0.0.1 only, and torn down by a trap (only mounts and processes this script started).
# awk programs are single-quoted on purpose.
# shellcheck disable=SC2016
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
scripts=$repo/scripts
helper=$scripts/bench_helper.py

BIG_MIB=256 SMALL_MIB=24 N_SMALL=8 N_LIST=2000 LIST_BYTES=8192
ROWS=1,2,3,4,5,6,7,8,9,10 KEEP=0 SKIP_TRACKFS=0 TRACKFS=""
LATENCY_MS=20 CACHE_ROW5=64MiB FIO_SECONDS=10 REPEAT_ROW4=3 REPEAT_ROW1=5 REPEAT_ROW2=3
WAN_LINK_MBS=100 WAN_CONN_MBS=16 WAN_DELAY_MS=10 REPEAT_ROW7=3

usage() { sed -n '5,15p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while (($#)); do
  case $1 in
    --quick) BIG_MIB=64 SMALL_MIB=8 N_LIST=200 REPEAT_ROW1=3; shift ;;
    --rows) ROWS=${2:?}; shift 2 ;;
    --trackfs) TRACKFS=${2:?}; shift 2 ;;
    --skip-trackfs) SKIP_TRACKFS=1; shift ;;
    --keep) KEEP=1; shift ;;
    -h | --help) sed -n '2,36p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) usage ;;
  esac
done
row_on() { [[ ",$ROWS," == *",$1,"* ]]; }

log() { printf '\n==> %s\n' "$*" >&2; }
note() { printf '    %s\n' "$*" >&2; }
die() { printf 'bench.sh: error: %s\n' "$*" >&2; exit 1; }
now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

# --- tools -----------------------------------------------------------------------------
declare -A PKG_FOR=([nginx]=nginx [rclone]=rclone [fio]=fio [curl]=curl [python3]=python3
  [fusermount3]=fuse3 [mountpoint]=util-linux)
have() { command -v "$1" >/dev/null 2>&1 || [[ -x /usr/sbin/$1 ]]; }
missing=()
for cmd in "${!PKG_FOR[@]}"; do
  have "$cmd" || [[ " ${missing[*]-} " == *" ${PKG_FOR[$cmd]} "* ]] || missing+=("${PKG_FOR[$cmd]}")
done
if ((${#missing[@]})); then
  [[ $(id -u) -eq 0 ]] || die "missing tools; install them: sudo apt-get install -y ${missing[*]}"
  log "installing ${missing[*]}"
  { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
    >/tmp/trackfs-bench-apt.log 2>&1 || die "apt-get failed; see /tmp/trackfs-bench-apt.log"
fi
[[ -e /dev/fuse ]] || die "/dev/fuse is missing: FUSE is needed for the mounts"
IS_ROOT=0
if [[ $(id -u) -eq 0 ]]; then IS_ROOT=1; fi

# --- work folder, bookkeeping and cleanup ----------------------------------------------
W=$(mktemp -d "${TMPDIR:-/tmp}/trackfs-bench.XXXXXX")
mkdir -p "$W/logs" "$W/mnt"
: >"$W/pids" # one "PID" per line: processes we started (serve, mounts)
: >"$W/mounts" # one mountpoint per line
: >"$W/results" # "key value" per line
NGINX_PID=""

# shellcheck source=scripts/bench_lib.sh
source "$scripts/bench_lib.sh"
# shellcheck source=scripts/bench_wan.sh
source "$scripts/bench_wan.sh"
# Rows 8 and up live in files of their own: scripts/bench_row<N>.sh defines row<N>_run (the
# measurements, `record`ing results) and row<N>_table (its `line`s). A missing file is a
# row that cannot run.
EXTRA_ROWS=(8 9 10)
for n in "${EXTRA_ROWS[@]}"; do
  # shellcheck disable=SC1090
  if [[ -f $scripts/bench_row$n.sh ]]; then source "$scripts/bench_row$n.sh"; fi
done

ROW_PID=""
cleanup() {
  local m pid
  trap - INT TERM
  # Readers first, so the unmounts below are not busy.
  [[ -n $ROW_PID ]] && kill_tree "$ROW_PID"
  while read -r m; do [[ -n $m ]] && unmount "$m"; done <"$W/mounts"
  while read -r pid; do [[ -n $pid ]] && stop_pid "$pid"; done <"$W/pids"
  [[ -n $NGINX_PID ]] && "$scripts/nginx-cdn.sh" --stop "$NGINX_PID" 2>/dev/null
  if ((KEEP)); then echo "work folder kept: $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'echo "interrupted: cleaning up" >&2; exit 130' INT TERM

# A read must not hang the whole benchmark (a FUSE read that never returns).
T() { timeout -k 10 "$@"; }
seq_read() { T 600 python3 "$helper" seq "$1" | awk '{ printf "%.1f", $1 / $2 / 1e6 }'; }
# The same, printing "MB/s CPU-s": the whole machine's busy CPU-seconds during the read.
seq_read_cpu() { T 600 python3 "$helper" seq "$1" | awk '{ printf "%.1f %s", $1 / $2 / 1e6, $3 }'; }

# --- the machine -----------------------------------------------------------------------
cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
mem=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
aes=$(grep -qw aes /proc/cpuinfo && echo yes || echo no)
disk=$(df -h --output=source,fstype "$W" | tail -1 | tr -s ' ')
rev=$(git -C "$repo" describe --always --dirty 2>/dev/null || echo unknown)
MACHINE="$(nproc) cores, ${cpu:-unknown CPU}, AES-NI: $aes, $mem RAM, kernel $(uname -r), work folder on $disk"
VERSIONS="trackfs $rev; $(nginx -v 2>&1 | sed 's/.*version: //'); $(rclone version 2>/dev/null | head -1); $(fio --version); $(curl --version | head -1 | cut -d' ' -f1-2)"
log "machine: $MACHINE"
note "$VERSIONS"
((IS_ROOT)) || note "not root: page cache cannot be dropped, so 'cold' figures are only fresh-mount figures"

# --- trackfs binary ----------------------------------------------------------------------
target_dir() {
  local dir
  dir=$(cargo metadata --format-version 1 --no-deps --manifest-path "$repo/Cargo.toml" |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
  echo "${dir:-$repo/target}"
}
# Publishing needs it even with --skip-trackfs (which only skips trackfs's own rows).
if [[ -z $TRACKFS ]]; then
  log "building trackfs (release)"
  cargo build --release --quiet --manifest-path "$repo/Cargo.toml" --bin trackfs
  TRACKFS=$(target_dir)/release/trackfs
fi
if row_on 1; then
  log "building the FUSE ceiling (examples/fuse_ceiling.rs)"
  cargo build --release --quiet --manifest-path "$repo/Cargo.toml" --example fuse_ceiling
  CEILING=$(target_dir)/release/examples/fuse_ceiling
fi
[[ -x $TRACKFS ]] || die "no trackfs binary at $TRACKFS"
TFS=1
if ((SKIP_TRACKFS)); then TFS=0; fi

# --- data ---------------------------------------------------------------------------------
log "making data: one ${BIG_MIB} MiB track and ${N_SMALL} x ${SMALL_MIB} MiB (random MP3 frames)"
SRC=$W/src
BIG_REL="Benchmark/Big/01 Big Track.mp3"
python3 "$helper" mkmp3 "$SRC/$BIG_REL" $((BIG_MIB << 20))
SMALL_REL=()
for i in $(seq "$N_SMALL"); do
  rel=$(printf 'Benchmark/Eight/%02d Track %d.mp3' "$i" "$i")
  python3 "$helper" mkmp3 "$SRC/$rel" $((SMALL_MIB << 20))
  SMALL_REL+=("$rel")
done
t0=$(now)
"$TRACKFS" publish --no-progress "$SRC" "$W/lib" >"$W/logs/publish.log" 2>&1 ||
  { tail -20 "$W/logs/publish.log" >&2; die "trackfs publish failed"; }
note "published in $(elapsed "$t0" "$(now)") s"
BIG_BYTES=$((BIG_MIB << 20))
# The ciphertext of the big track: the one file of its size in LIBRARY/audio.
BIG_ID=$(find "$W/lib/audio" -type f -size "${BIG_BYTES}c" -printf '%f\n' | head -1)
[[ -n $BIG_ID ]] || die "no ${BIG_BYTES}-byte file in $W/lib/audio"

if ((TFS)) && row_on 6; then
  log "making a ${N_LIST}-track library for ls -lR"
  python3 "$helper" mklib "$W/src-list" "$N_LIST" "$LIST_BYTES"
  "$TRACKFS" publish --no-progress "$W/src-list" "$W/lib-list" >"$W/logs/publish-list.log" 2>&1 ||
    { tail -20 "$W/logs/publish-list.log" >&2; die "trackfs publish (list library) failed"; }
fi

# rclone: the same plaintext, encrypted by rclone-crypt into a folder nginx serves with
# listings; the mounted remote is crypt over http. The config is ours alone (--config).
log "encrypting the same plaintext with rclone-crypt"
NGINX_PORT=$(free_port)
PROXY_PORT=$(free_port)
rclone_crypt_copy "$SRC" "$W/crypt" lcrypt
rclone_crypt_remote wcrypt "http://127.0.0.1:$NGINX_PORT/crypt/"
rclone_crypt_remote wancrypt "http://127.0.0.1:$PROXY_PORT/crypt/"

log "starting nginx (CDN for LIBRARY/audio, and the rclone-crypt folder at /crypt/)"
NGINX_PID=$("$scripts/nginx-cdn.sh" "$W/lib" "$NGINX_PORT" --dir /crypt/="$W/crypt" 2>"$W/logs/nginx-start.log") ||
  { cat "$W/logs/nginx-start.log" >&2; die "nginx did not start"; }
CDN=http://127.0.0.1:$NGINX_PORT
if row_on 7; then
  log "starting the WAN-like path in front of nginx (scripts/wan_proxy.py)"
  start_wan_proxy
fi

start_serve() { # LIBRARY [serve flags...]: sets SERVE_PORT
  local lib=$1 port lg pid
  shift
  port=$(free_port)
  lg=$W/logs/serve-$port.log
  "$TRACKFS" serve "$lib" --listen "127.0.0.1:$port" "$@" >"$lg" 2>&1 &
  pid=$!
  echo "$pid" >>"$W/pids"
  wait_port "$port" "$pid" "$lg"
  SERVE_PORT=$port
}
if ((TFS)); then
  log "starting trackfs serve: one on nginx, one with ${LATENCY_MS} ms latency"
  start_serve "$W/lib" --cdn-base "$CDN"
  PORT_FAST=$SERVE_PORT
  start_serve "$W/lib" --latency "$LATENCY_MS"
  PORT_SLOW=$SERVE_PORT
  if row_on 6; then
    start_serve "$W/lib-list" --latency "$LATENCY_MS"
    PORT_LIST=$SERVE_PORT
  fi
  if row_on 7; then
    start_serve "$W/lib" --cdn-base "$WAN_CDN"
    PORT_WAN=$SERVE_PORT
  fi
fi

# Where a source file appears in a trackfs mount: found by its size (names are the mount's
# business: "NN - Title.ext").
tfs_path() { # MOUNTPOINT BYTES [N]
  find "$1" -path "$1/.trackfs" -prune -o -type f -size "${2}c" -print | sort | head -"${3:-1}"
}

# --- rows --------------------------------------------------------------------------------
# Row 1 swings by a third between identical runs on a small VM (memory bandwidth shared with
# neighbours), so each contender is measured REPEAT_ROW1 times, cold each time, and the median
# is the figure; every run is listed in the log.
row1_trackfs() {
  local f runs=() dds=()
  for i in $(seq "$REPEAT_ROW1"); do
    drop_caches
    mount_trackfs "$PORT_FAST" "seq$i" "$W/lib"
    f=$(tfs_path "$MNT" "$BIG_BYTES")
    [[ -n $f ]] || die "the big track is not in the mount"
    runs+=("$(seq_read_cpu "$f")")
    # The warm re-read: the last mount, nothing dropped, a new open().
    if ((i == REPEAT_ROW1)) && row_on 2; then warm_reads tfs_warm_seq "$f"; fi
    "$TRACKFS" stats "$MNT" >"$W/logs/stats-row1.txt" 2>&1 || true
    umount_wait "$MNT" "$MOUNT_PID"
    drop_caches
    mount_trackfs "$PORT_FAST" "dd$i" "$W/lib"
    dds+=("$(dd_read_cpu "$(tfs_path "$MNT" "$BIG_BYTES")")")
    umount_wait "$MNT" "$MOUNT_PID"
  done
  record_cold trackfs tfs "${runs[@]}"
  record_cold "trackfs (dd)" tfs_dd "${dds[@]}"
}
row1_rclone() {
  local runs=() dds=()
  for i in $(seq "$REPEAT_ROW1"); do
    drop_caches
    mount_rclone "seq$i"
    runs+=("$(seq_read_cpu "$MNT/$BIG_REL")")
    umount_wait "$MNT" "$MOUNT_PID"
    drop_caches
    mount_rclone "dd$i"
    dds+=("$(dd_read_cpu "$MNT/$BIG_REL")")
    umount_wait "$MNT" "$MOUNT_PID"
  done
  record_cold rclone rclone "${runs[@]}"
  record_cold "rclone (dd)" rclone_dd "${dds[@]}"
}
curl_read() { # [BASE_URL]: prints MB/s of one download of the big ciphertext
  T 600 curl -sf -o /dev/null -w '%{size_download} %{time_total}\n' "${1:-$CDN}/audio/$BIG_ID" |
    awk '{ printf "%.1f", $1 / $2 / 1e6 }'
}
curl_read_cpu() { # prints "MB/s CPU-s", as seq_read_cpu does (awk, not Python: no start-up cost)
  local b0 mbs
  b0=$(busy_jiffies)
  mbs=$(curl_read "$CDN")
  echo "$mbs $(awk -v a="$b0" -v b="$(busy_jiffies)" 'BEGIN { printf "%.2f", (b - a) / 100 }')"
}
busy_jiffies() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }
row1_curl() {
  local runs=()
  for i in $(seq "$REPEAT_ROW1"); do
    drop_caches
    runs+=("$(curl_read_cpu)")
  done
  record_cold curl curl "${runs[@]}"
  # Again, now that nginx has the file in page cache: shows whether the disk was the limit.
  measure curl_warm_seq curl_read
}
# The same cold read of a FUSE file that does no work: what FUSE itself costs here, a floor
# under trackfs's CPU time and a ceiling over its speed.
row1_ceiling() {
  local runs=() dds=() mnt=$W/mnt/ceiling lg=$W/logs/ceiling.log reader
  mkdir -p "$mnt"
  echo "$mnt" >>"$W/mounts"
  for i in $(seq "$REPEAT_ROW1"); do
    for reader in seq_read_cpu dd_read_cpu; do
      drop_caches
      "$CEILING" "$mnt" "$BIG_BYTES" >>"$lg" 2>&1 &
      MOUNT_PID=$!
      echo "$MOUNT_PID" >>"$W/pids"
      wait_mounted "$mnt" "$MOUNT_PID" "$lg"
      if [[ $reader == seq_read_cpu ]]; then
        runs+=("$(seq_read_cpu "$mnt/file")")
      else
        dds+=("$(dd_read_cpu "$mnt/file")")
      fi
      umount_wait "$mnt" "$MOUNT_PID"
    done
  done
  record_cold "FUSE ceiling" ceiling "${runs[@]}"
  record_cold "FUSE ceiling (dd)" ceiling_dd "${dds[@]}"
}
# record_cold NAME KEY RUN...: each RUN is "MB/s CPU-s"; records the medians of both.
record_cold() {
  local name=$1 key=$2 r mbs=() cpus=()
  shift 2
  for r in "$@"; do mbs+=("${r% *}") cpus+=("${r#* }"); done
  note "$name cold runs, MB/s: ${mbs[*]}; busy CPU-seconds: ${cpus[*]}"
  measure "${key}_cold_seq" python3 "$helper" median "${mbs[@]}"
  measure "${key}_cold_cpu" python3 "$helper" median "${cpus[@]}"
}
# Row 2 for either side: REPEAT_ROW2 re-reads of a file already in page cache, the median
# recorded and every run listed. The first re-read is the slowest on both sides (the kernel
# moves each page to its active list then), and by far so for FUSE, whose pages are 4 KiB
# where ext4 uses large folios.
warm_reads() { # KEY FILE
  local runs=()
  for _ in $(seq "$REPEAT_ROW2"); do runs+=("$(seq_read "$2")"); done
  note "$1 runs, MB/s: ${runs[*]}"
  measure "$1" python3 "$helper" median "${runs[@]}"
}
row2_local() {
  cat "$SRC/$BIG_REL" >/dev/null # into the page cache
  warm_reads local_warm_seq "$SRC/$BIG_REL"
}
fio_iops() { # FILE NAME
  T 120 fio --name=randread --filename="$1" --rw=randread --bs=4k --ioengine=psync \
    --runtime="$FIO_SECONDS" --time_based --readonly --numjobs=1 \
    --output-format=json --output="$W/logs/fio-$2.json" >/dev/null
  python3 "$helper" fio-iops "$W/logs/fio-$2.json"
}
row3_trackfs() {
  drop_caches
  mount_trackfs "$PORT_FAST" rand "$W/lib"
  local f
  f=$(tfs_path "$MNT" "$BIG_BYTES")
  measure tfs_rand_iops fio_iops "$f" trackfs
  umount_wait "$MNT" "$MOUNT_PID"
}
row3_rclone() {
  drop_caches
  mount_rclone rand
  measure rclone_rand_iops fio_iops "$MNT/$BIG_REL" rclone
  umount_wait "$MNT" "$MOUNT_PID"
}
row4_trackfs() {
  local i f out opens=() firsts=() seeks=()
  for i in $(seq "$REPEAT_ROW4"); do
    drop_caches
    mount_trackfs "$PORT_SLOW" first "$W/lib"
    f=$(tfs_path "$MNT" "$BIG_BYTES")
    out=$(T 60 python3 "$helper" firstbyte "$f")
    opens+=("${out% *}") firsts+=("${out#* }")
    umount_wait "$MNT" "$MOUNT_PID"
  done
  for i in $(seq "$REPEAT_ROW4"); do
    drop_caches
    mount_trackfs "$PORT_SLOW" seek "$W/lib"
    f=$(tfs_path "$MNT" "$BIG_BYTES")
    out=$(T 60 python3 "$helper" seekbyte "$f")
    seeks+=("${out#* }")
    umount_wait "$MNT" "$MOUNT_PID"
  done
  note "open ms: ${opens[*]}; first byte ms: ${firsts[*]}; seek+read ms: ${seeks[*]}"
  measure tfs_open_ms python3 "$helper" median "${opens[@]}"
  measure tfs_first_byte_ms python3 "$helper" median "${firsts[@]}"
  measure tfs_seek_ms python3 "$helper" median "${seeks[@]}"
}
par_read() { # FILES...: prints aggregate MB/s
  T 600 python3 "$helper" par "$@" | awk '{ printf "%.1f", $1 / $2 / 1e6 }'
}
row5_trackfs() {
  drop_caches
  mount_trackfs "$PORT_FAST" eight "$W/lib" --cache-size "$CACHE_ROW5"
  local files=()
  # Issue 18's case: fio's random reads first, on the same mount (its blocks, of another
  # size than the readers' responses, are what kept a glibc heap large).
  fio_iops "$(tfs_path "$MNT" "$BIG_BYTES")" trackfs-row5 >/dev/null
  mapfile -t files < <(tfs_path "$MNT" $((SMALL_MIB << 20)) "$N_SMALL")
  ((${#files[@]} == N_SMALL)) || die "found ${#files[@]} of $N_SMALL tracks in the mount"
  measure tfs_par_mbs par_read "${files[@]}"
  measure tfs_peak_rss_mib awk '/^VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$MOUNT_PID/status"
  "$TRACKFS" stats "$MNT" >"$W/logs/stats-row5.txt" 2>&1 || true
  umount_wait "$MNT" "$MOUNT_PID"
}
row5_rclone() {
  drop_caches
  mount_rclone eight
  local files=() rel
  for rel in "${SMALL_REL[@]}"; do files+=("$MNT/$rel"); done
  measure rclone_par_mbs par_read "${files[@]}"
  measure rclone_peak_rss_mib awk '/^VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$MOUNT_PID/status"
  umount_wait "$MNT" "$MOUNT_PID"
}
row6_trackfs() {
  drop_caches
  local t0 t1 t2 t3 n
  t0=$(now)
  mount_trackfs "$PORT_LIST" list "$W/lib-list"
  t1=$(now)
  T 300 ls -lR "$MNT" >"$W/logs/ls-cold.txt"
  t2=$(now)
  T 300 ls -lR "$MNT" >"$W/logs/ls-warm.txt"
  t3=$(now)
  n=$(grep -c '\.mp3$' "$W/logs/ls-cold.txt" || true)
  ((n == N_LIST)) || note "warning: ls -lR listed $n tracks, expected $N_LIST"
  record tfs_list_mount_s "$(elapsed "$t0" "$t1")"
  record tfs_ls_cold_s "$(elapsed "$t1" "$t2")"
  record tfs_ls_warm_s "$(elapsed "$t2" "$t3")"
  umount_wait "$MNT" "$MOUNT_PID"
}

if ((TFS)) && { row_on 1 || row_on 2; }; then
  run_row "1/2. trackfs: cold sequential read, then warm re-read" row1_trackfs
fi
if row_on 1; then
  run_row "1. rclone-crypt: cold sequential read" row1_rclone
  run_row "1. curl of the ciphertext from nginx: cold" row1_curl
  run_row "1. a FUSE file that does no work: cold" row1_ceiling
fi
if row_on 2; then run_row "2. plaintext from the local page cache" row2_local; fi
if row_on 3; then
  if ((TFS)); then run_row "3. trackfs: fio random 4 KiB reads, cold" row3_trackfs; fi
  run_row "3. rclone-crypt: fio random 4 KiB reads, cold" row3_rclone
fi
if ((TFS)) && row_on 4; then
  run_row "4. trackfs: first byte and seek, ${LATENCY_MS} ms latency, cold (x$REPEAT_ROW4)" row4_trackfs
fi
if row_on 5; then
  if ((TFS)); then run_row "5. trackfs: $N_SMALL tracks at once, --cache-size $CACHE_ROW5" row5_trackfs; fi
  run_row "5. rclone-crypt: $N_SMALL tracks at once" row5_rclone
fi
if ((TFS)) && row_on 6; then
  run_row "6. trackfs: ls -lR of $N_LIST tracks, ${LATENCY_MS} ms latency" row6_trackfs
fi
if row_on 7; then
  wan="${WAN_LINK_MBS} MB/s link, ${WAN_CONN_MBS} MB/s a connection, $((2 * WAN_DELAY_MS)) ms round trip"
  run_row "7. the WAN path ($wan): 8 parallel curl ranges" row7_link
  if ((TFS)); then run_row "7. trackfs through the WAN path, cold" row7_trackfs; fi
  run_row "7. rclone-crypt through the WAN path, cold" row7_rclone
  run_row "7. curl through the WAN path" row7_curl
fi
for n in "${EXTRA_ROWS[@]}"; do
  row_on "$n" || continue
  if declare -F "row${n}_run" >/dev/null; then
    "row${n}_run"
  else
    note "row $n: scripts/bench_row$n.sh is missing"
    echo "failed_row$n 1" >>"$W/results"
  fi
done

if [[ -d $repo/benches ]] && ((TFS)) && row_on 1; then
  bench_log=${TMPDIR:-/tmp}/trackfs-cargo-bench.log
  log "cargo bench (criterion: decrypt throughput, cache get/put); full output: $bench_log"
  (cd "$repo" && cargo bench) >"$bench_log" 2>&1 || note "cargo bench failed (see $bench_log)"
  # Criterion prints the name, then "time: [...]" and "thrpt: [...]" lines.
  grep -E -B1 'time:|thrpt:' "$bench_log" | grep -v '^--$' | sed 's/^/    /' >&2 || true
fi

# --- the table ----------------------------------------------------------------------------
declare -A R=()
while read -r k v; do R[$k]=$v; done <"$W/results"
get() { echo "${R[$1]:-}"; }

cache_mib=$(awk -v s="$CACHE_ROW5" 'BEGIN { sub(/MiB$/, "", s); print s }')
rss_limit=$((cache_mib + 64))
PASS=0 FAIL=0

{
  echo
  echo "trackfs benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "machine: $MACHINE"
  echo "versions: $VERSIONS"
  echo "data: ${BIG_MIB} MiB track, ${N_SMALL} x ${SMALL_MIB} MiB tracks, ${N_LIST}-track listing; loopback nginx CDN"
  row_on 7 && echo "WAN path (row 7): ${WAN_LINK_MBS} MB/s link, ${WAN_CONN_MBS} MB/s a connection, ${WAN_DELAY_MS} ms each way"
  ((IS_ROOT)) || echo "NOTE: not root, page cache not dropped: cold figures are fresh-mount only"
  echo
  printf '| %-44s | %10s | %10s | %-17s | %7s | %-27s | %-4s |\n' \
    "row" "trackfs" "peer" "peer is" "ratio" "target" "met"
  printf '|%s|%s|%s|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..46})" "$(printf -- '-%.0s' {1..12})" \
    "$(printf -- '-%.0s' {1..12})" "$(printf -- '-%.0s' {1..19})" "$(printf -- '-%.0s' {1..9})" \
    "$(printf -- '-%.0s' {1..29})" "$(printf -- '-%.0s' {1..6})"
  if row_on 1; then
    line "1. cold sequential read, MB/s" MB/s "$(get tfs_cold_seq)" "$(get rclone_cold_seq)" "rclone-crypt" ratio_ge 3
    line "1. cold sequential read, MB/s" MB/s "$(get tfs_cold_seq)" "$(get curl_cold_seq)" "curl (ciphertext)" ratio_ge 0.6
    line "1. (curl again, server page cache warm)" MB/s "" "$(get curl_warm_seq)" "curl (ciphertext)" info ""
    line "1. (a FUSE file that does no work)" MB/s "$(get tfs_cold_seq)" "$(get ceiling_cold_seq)" "FUSE ceiling" info ""
    line "1. busy CPU-seconds per cold read" s "$(get tfs_cold_cpu)" "$(get curl_cold_cpu)" "curl (ciphertext)" info ""
    line "1. (the same, FUSE ceiling)" s "" "$(get ceiling_cold_cpu)" "FUSE ceiling" info ""
    # Issue 18: trackfs does curl's job and the do-nothing FUSE file's job, plus decryption.
    cpu_floor=$(awk -v a="$(get curl_cold_cpu)" -v b="$(get ceiling_cold_cpu)" 'BEGIN { if (a != "" && b != "") print a + b }')
    line "1. busy CPU-seconds vs curl + FUSE ceiling" s "$(get tfs_cold_cpu)" "$cpu_floor" "curl + FUSE ceil." ratio_le 1.3
    line "1. cold, dd bs=1M, MB/s" MB/s "$(get tfs_dd_cold_seq)" "$(get rclone_dd_cold_seq)" "rclone-crypt (dd)" info ""
    line "1. (dd bs=1M, a FUSE file that does no work)" MB/s "$(get tfs_dd_cold_seq)" "$(get ceiling_dd_cold_seq)" "FUSE ceiling (dd)" info ""
    line "1. busy CPU-seconds, dd bs=1M" s "$(get tfs_dd_cold_cpu)" "$(get ceiling_dd_cold_cpu)" "FUSE ceiling (dd)" info ""
    line "1. (the same, rclone-crypt)" s "" "$(get rclone_dd_cold_cpu)" "rclone-crypt (dd)" info ""
  fi
  row_on 2 && line "2. warm re-read, MB/s" MB/s "$(get tfs_warm_seq)" "$(get local_warm_seq)" "local page cache" ratio_ge 0.5
  row_on 3 && line "3. random 4 KiB reads (fio, cold), IOPS" IOPS "$(get tfs_rand_iops)" "$(get rclone_rand_iops)" "rclone-crypt" ratio_ge 5
  if row_on 4; then
    line "4. open(), ${LATENCY_MS} ms latency, cold, ms" ms "$(get tfs_open_ms)" "" "" info ""
    line "4. first byte after open(), cold, ms" ms "$(get tfs_first_byte_ms)" "" "" le 50
    line "4. seek to middle + read, cold, ms" ms "$(get tfs_seek_ms)" "" "" le 30
  fi
  if row_on 5; then
    line "5. $N_SMALL tracks at once, aggregate MB/s" MB/s "$(get tfs_par_mbs)" "$(get rclone_par_mbs)" "rclone-crypt" info ""
    line "5. peak RSS, MiB (cache $CACHE_ROW5)" MiB "$(get tfs_peak_rss_mib)" "$(get rclone_peak_rss_mib)" "rclone-crypt" le "$rss_limit"
  fi
  if row_on 6; then
    line "6. mount ready, $N_LIST tracks, s" s "$(get tfs_list_mount_s)" "" "" info ""
    line "6. ls -lR cold, $N_LIST tracks, s" s "$(get tfs_ls_cold_s)" "" "" le 3
    line "6. ls -lR warm, $N_LIST tracks, s" s "$(get tfs_ls_warm_s)" "" "" info ""
  fi
  if row_on 7; then
    line "7. WAN path, cold, MB/s" MB/s "$(get tfs_wan_mbs)" "$WAN_LINK_MBS" "the link" ratio_ge 0.8
    line "7. WAN path, cold, MB/s" MB/s "$(get tfs_wan_mbs)" "$(get curl_wan_mbs)" "curl (ciphertext)" ratio_ge 4
    line "7. WAN path, cold, MB/s" MB/s "$(get tfs_wan_mbs)" "$(get rclone_wan_mbs)" "rclone-crypt" ratio_ge 4
    line "7. (8 curl ranges at once: the path's limit)" MB/s "" "$(get link_wan_mbs)" "curl x8 ranges" info ""
    line "7. connections used / most open at once" n "$(get tfs_wan_conns)" "$(get rclone_wan_conns)" "rclone-crypt" info ""
  fi
  for n in "${EXTRA_ROWS[@]}"; do
    if row_on "$n" && declare -F "row${n}_table" >/dev/null; then "row${n}_table"; fi
  done
  echo
  failed=$(grep -c '^failed_' "$W/results" || true)
  echo "targets met: $PASS of $((PASS + FAIL))$( ((failed)) && echo "; $failed row(s) failed to run (see logs above)")"
  echo "$FAIL $failed" >"$W/verdict"
} | tee "$W/table.txt"
cp "$W/table.txt" "${TMPDIR:-/tmp}/trackfs-bench-table.txt"
echo "(table also saved to ${TMPDIR:-/tmp}/trackfs-bench-table.txt)" >&2
read -r unmet failed <"$W/verdict"
if ((failed)); then exit 1; fi
if ((unmet)); then exit 3; fi
