# Helpers for scripts/bench.sh, sourced by it: processes, mounts, figures and rows.
# They use bench.sh's globals ($W, $helper, $TRACKFS, log/note/die) and start nothing on
# their own; everything they start is written to $W/pids or $W/mounts for its cleanup.
# shellcheck shell=bash
# shellcheck disable=SC2016,SC2034,SC2154

# Mounted, even if its process is gone ("Transport endpoint is not connected", where
# `mountpoint -q` says no): /proc/mounts escapes spaces as \040.
is_mounted() { M=${1// /\\040} awk '$2 == ENVIRON["M"] { f = 1 } END { exit !f }' /proc/mounts; }
unmount() { # MOUNTPOINT: politely, then lazily
  is_mounted "$1" || return 0
  fusermount3 -u "$1" 2>/dev/null || umount "$1" 2>/dev/null || fusermount3 -uz "$1" 2>/dev/null ||
    umount -l "$1" 2>/dev/null || true
}
stop_pid() { # PID: TERM, wait up to 5 s, then KILL
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}
kill_tree() { # PID: a row's subshell and everything under it (readers, fio, timeout)
  local child
  for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do kill_tree "$child"; done
  kill -TERM "$1" 2>/dev/null || true
}

record() { echo "$1 $2" >>"$W/results"; note "$1 = $2"; }
# measure KEY COMMAND...: run it (a failure fails the row under set -e), record its output.
measure() {
  local v
  v=$("${@:2}")
  [[ -n $v ]] || die "no figure for $1"
  record "$1" "$v"
}
# dd_read_cpu FILE: one `dd bs=1M` of FILE, printing "MB/s CPU-s" as seq_read_cpu does (the
# whole machine's busy CPU-seconds meanwhile; dd has no start-up worth counting).
dd_read_cpu() {
  local b0 out
  b0=$(busy_jiffies)
  out=$(LC_ALL=C T 600 dd if="$1" of=/dev/null bs=1M 2>&1) || { echo "$out" >&2; return 1; }
  awk -v a="$b0" -v b="$(busy_jiffies)" '/ copied, / {
      for (i = 1; i <= NF; i++) if ($i == "copied,") s = $(i + 1)
      printf "%.1f %.2f", $1 / s / 1e6, (b - a) / 100 }' <<<"$out"
}
free_port() { python3 "$helper" free-port; }
wait_port() { # PORT PID LOG: until something listens, or the process died
  for _ in $(seq 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || { tail -20 "$3" >&2; die "process $2 exited (log: $3)"; }
    sleep 0.05
  done
  die "nothing listening on port $1 after 15 s (log: $3)"
}

drop_caches() {
  if ((IS_ROOT)); then
    sync
    echo 3 >/proc/sys/vm/drop_caches
  fi
}

# Mounts run in the foreground of a background job; wait until the kernel shows the mount.
# Sets MOUNT_PID. Used by row subshells, which are cleaned up by umount_all after each row.
wait_mounted() { # MOUNTPOINT PID LOG
  for _ in $(seq 1200); do
    mountpoint -q "$1" && return 0
    kill -0 "$2" 2>/dev/null || { tail -20 "$3" >&2; die "mount process exited (log: $3)"; }
    sleep 0.05
  done
  die "$1 not mounted after 60 s (log: $3)"
}
mount_trackfs() { # ORIGIN_PORT NAME LIBRARY [mount flags...] (credentials from LIBRARY)
  local port=$1 name=$2 lib=$3
  shift 3
  # Cold means cold: no disk cache (on by default, in ~/.cache) unless a row asks for one;
  # BENCH_DISK_CACHE=on gives every such mount a fresh, empty one instead (still cold).
  if [[ " $* " != *" --disk-cache "* ]]; then
    if [[ ${BENCH_DISK_CACHE:-off} == on ]]; then
      set -- --disk-cache "$(mktemp -d "$W/disk-cache.XXXXXX")" "$@"
    else
      set -- --disk-cache off "$@"
    fi
  fi
  local mnt=$W/mnt/$name lg
  lg=$W/logs/mount-$name-$(date +%s%N).log
  mkdir -p "$mnt"
  echo "$mnt" >>"$W/mounts"
  "$TRACKFS" mount "http://127.0.0.1:$port" "$mnt" --credentials "$lib/credentials" "$@" \
    >"$lg" 2>&1 &
  MOUNT_PID=$!
  echo "$MOUNT_PID" >>"$W/pids"
  wait_mounted "$mnt" "$MOUNT_PID" "$lg"
  MNT=$mnt
}
# The bench's own rclone config, $W/rclone.conf (every rclone call passes --config): one password
# and salt for every crypt remote, so a folder filled through one remote reads through another.
rclone_crypt_remote() { # NAME DIR|URL: a crypt remote NAME over a folder or an http URL
  local remote=$2
  : "${RCLONE_PASS:=$(rclone obscure trackfs-bench-password)}"
  : "${RCLONE_SALT:=$(rclone obscure trackfs-bench-salt)}"
  if [[ $2 == http://* ]]; then
    printf '[%s-http]\ntype = http\nurl = %s\n\n' "$1" "$2"
    remote=$1-http:
  fi
  printf '[%s]\ntype = crypt\nremote = %s\npassword = %s\npassword2 = %s\n\n' \
    "$1" "$remote" "$RCLONE_PASS" "$RCLONE_SALT"
} >>"$W/rclone.conf"
rclone_crypt_copy() { # FROM DIR NAME: FROM encrypted into the folder DIR (crypt remote NAME)
  mkdir -p "$2"
  rclone_crypt_remote "$3" "$2"
  rclone --config "$W/rclone.conf" copy "$1" "$3:" 2>"$W/logs/rclone-copy-$3.log" ||
    { tail "$W/logs/rclone-copy-$3.log" >&2; die "rclone copy of $1 into $2 failed"; }
}
mount_rclone() { # NAME [REMOTE]: the crypt remote over nginx, or REMOTE (e.g. wancrypt)
  local mnt=$W/mnt/$1 lg remote=${2:-wcrypt}
  lg=$W/logs/rclone-$1-$(date +%s%N).log
  mkdir -p "$mnt"
  echo "$mnt" >>"$W/mounts"
  # Defaults on purpose (vfs-cache-mode off, 16 MiB buffer): what a user gets out of the box.
  rclone --config "$W/rclone.conf" mount "$remote:" "$mnt" >"$lg" 2>&1 &
  MOUNT_PID=$!
  echo "$MOUNT_PID" >>"$W/pids"
  wait_mounted "$mnt" "$MOUNT_PID" "$lg"
  MNT=$mnt
}
umount_wait() { # MOUNTPOINT PID: unmount and let the mount process exit
  unmount "$1"
  for _ in $(seq 100); do kill -0 "$2" 2>/dev/null || return 0; sleep 0.05; done
  stop_pid "$2"
}
umount_all() { # after a row: whatever a (failed) row left mounted
  local m
  while read -r m; do [[ -n $m ]] && unmount "$m"; done <"$W/mounts"
}

# Run one row in a subshell so `set -e` works inside it and a failing row (a trackfs bug,
# a timeout) is reported and the next row still runs. The subshell runs in the background
# and we `wait` for it: bash runs an INT/TERM trap during `wait` at once, whereas for a
# foreground child that catches Ctrl-C itself (fio, rclone) it would never run it.
run_row() { # NAME FUNCTION
  local rc=0
  log "$1"
  (
    set -e
    "$2"
  ) &
  ROW_PID=$!
  wait "$ROW_PID" || rc=$?
  ROW_PID=""
  umount_all
  ((rc == 0)) || {
    note "row failed (exit $rc); logs in $W/logs"
    echo "failed_$2 1" >>"$W/results"
  }
}

# A table row, counted into PASS/FAIL.
# row: LABEL UNIT OURS PEER PEER_LABEL TARGET_KIND TARGET_VALUE
#   TARGET_KIND: ratio_ge (ours/peer >= v), le (ours <= v), info (no target)
line() {
  local label=$1 unit=$2 ours=$3 peer=$4 plabel=$5 kind=$6 tv=$7 ratio="" verdict="" target=""
  if [[ -n $ours && -n $peer ]]; then
    ratio=$(awk -v a="$ours" -v b="$peer" 'BEGIN { if (b > 0) printf "%.2fx", a / b }')
  fi
  case $kind in
    ratio_ge)
      target=">= ${tv}x $plabel"
      if [[ -n $ratio ]]; then
        if awk -v r="${ratio%x}" -v t="$tv" 'BEGIN { exit !(r >= t) }'; then verdict=PASS; else verdict=FAIL; fi
      fi
      ;;
    ratio_le)
      target="<= ${tv}x $plabel"
      if [[ -n $ratio ]]; then
        if awk -v r="${ratio%x}" -v t="$tv" 'BEGIN { exit !(r <= t) }'; then verdict=PASS; else verdict=FAIL; fi
      fi
      ;;
    le)
      target="<= $tv $unit"
      if [[ -n $ours ]]; then
        if awk -v a="$ours" -v t="$tv" 'BEGIN { exit !(a <= t) }'; then verdict=PASS; else verdict=FAIL; fi
      fi
      ;;
    info) target="-" ;;
  esac
  if [[ $kind != info ]]; then
    case $verdict in
      PASS) PASS=$((PASS + 1)) ;;
      FAIL) FAIL=$((FAIL + 1)) ;;
      *) verdict="n/a" ;;
    esac
  fi
  printf '| %-44s | %10s | %10s | %-17s | %7s | %-27s | %-4s |\n' \
    "$label" "${ours:--}" "${peer:--}" "$plabel" "${ratio:--}" "$target" "${verdict:-}"
}
