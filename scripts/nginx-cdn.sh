#!/usr/bin/env bash
# Start a private nginx as trackfs's CDN: serves ONLY LIBRARY/audio/ at /audio/ (byte ranges,
# sendfile, keep-alive), never the library's credentials, keys or secret.
#
# Usage: scripts/nginx-cdn.sh LIBRARY_DIR [ADDR:]PORT [--dir URLPATH=DIR]...
#        scripts/nginx-cdn.sh --stop PID
#   Prints the nginx master PID on stdout (and where its logs are on stderr), then returns;
#   nginx keeps running. Stop it with `scripts/nginx-cdn.sh --stop PID` (also removes its
#   temp folder) or plain `kill PID`.
#   --dir /crypt/=/path/to/folder   also serve a folder WITH directory listings (autoindex),
#                                  e.g. for an rclone `http` remote (scripts/bench.sh).
#   Then: trackfs serve LIBRARY_DIR --cdn-base http://127.0.0.1:PORT
#
# Why private: it must run as any user, next to a system nginx, in CI and benchmarks, so it
# touches no /etc/nginx, /var/log or /var/lib: pid, logs and temp files go to a fresh temp dir.
# The config is scripts/nginx-cdn.conf (documented there), filled in here.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
usage() { sed -n '5,6p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }
die() { printf 'nginx-cdn.sh: error: %s\n' "$*" >&2; exit 1; }

find_nginx() {
  command -v nginx 2>/dev/null || { [[ -x /usr/sbin/nginx ]] && echo /usr/sbin/nginx; } ||
    die "nginx not found; install it: sudo apt-get install -y nginx-light (or nginx)"
}

# --stop PID: only ever a nginx that this script started (its prefix is our temp folder).
if [[ ${1:-} == --stop ]]; then
  pid=${2:-}
  [[ $pid =~ ^[0-9]+$ ]] || usage
  [[ -r /proc/$pid/cmdline ]] || die "no process $pid"
  cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline")
  [[ $cmd == *nginx*trackfs-nginx.* ]] || die "process $pid is not a nginx started by nginx-cdn.sh ($cmd)"
  prefix=$(sed -n 's/.* -p \([^ ]*\) .*/\1/p' <<<"$cmd")
  kill -TERM "$pid"
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && die "nginx $pid did not stop within 5 s"
  [[ -n $prefix && -d $prefix && $prefix == */trackfs-nginx.* ]] && rm -rf "$prefix"
  exit 0
fi

[[ ${1:-} == -h || ${1:-} == --help ]] && { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0; }
(($# >= 2)) || usage
library=$1 port=$2
shift 2

[[ -d $library/audio ]] || die "$library/audio is not a folder; is $library a library made by 'trackfs publish'?"
audio=$(cd "$library/audio" && pwd -P)
if [[ $port =~ ^[0-9]+$ ]]; then listen="127.0.0.1:$port"; else listen=$port; fi
[[ $listen =~ ^[^[:space:]\;]+:[0-9]+$ ]] || die "bad port or address:port '$port'"

# nginx strings: a quote ends them, `$` starts a variable in `alias`; refuse such paths.
check_path() { [[ $1 != *[\"\\\$]* && $1 != *$'\n'* ]] || die "unsupported character in path: $1"; }
check_path "$audio"

extra=""
while (($#)); do
  case $1 in
    --dir)
      (($# >= 2)) || usage
      urlpath=${2%%=*} dir=${2#*=}
      [[ $urlpath =~ ^/[A-Za-z0-9._/-]*/$ && $urlpath != /audio/ && -d $dir ]] ||
        die "--dir wants /PATH/=EXISTING_DIR (got '$2')"
      dir=$(cd "$dir" && pwd -P)
      check_path "$dir"
      extra+="        location $urlpath { alias \"$dir/\"; autoindex on; }"$'\n'
      shift 2
      ;;
    *) usage ;;
  esac
done

nginx_bin=$(find_nginx)
prefix=$(mktemp -d "${TMPDIR:-/tmp}/trackfs-nginx.XXXXXX")
chmod 755 "$prefix"
# Until nginx is up, a failure leaves nothing behind.
trap '[[ -n ${prefix:-} ]] && rm -rf "$prefix"' EXIT

# As root, nginx would run its workers as `nobody`, who may not read the library: run them
# as the audio folder's owner instead (root if root owns it; it only serves loopback files).
user_line=""
if [[ $(id -u) -eq 0 ]]; then
  owner=$(stat -c %U "$audio") group=$(stat -c %G "$audio")
  [[ $owner != UNKNOWN && $group != UNKNOWN ]] && user_line="user $owner $group;"
fi

# Fill the template (bash substitution; & must stay literal under bash 5.2).
shopt -u patsub_replacement 2>/dev/null || true
conf=$(<"$here/nginx-cdn.conf")
conf=${conf//@USER@/$user_line}
conf=${conf//@PREFIX@/$prefix}
conf=${conf//@LISTEN@/$listen}
conf=${conf//@AUDIO_DIR@/$audio}
conf=${conf//@EXTRA@/$extra}
printf '%s\n' "$conf" >"$prefix/nginx.conf"

if ! "$nginx_bin" -t -q -e "$prefix/error.log" -p "$prefix" -c "$prefix/nginx.conf" 2>"$prefix/start.err"; then
  cat "$prefix/start.err" >&2
  die "nginx rejected the config ($prefix/nginx.conf)"
fi
if ! "$nginx_bin" -e "$prefix/error.log" -p "$prefix" -c "$prefix/nginx.conf" 2>"$prefix/start.err"; then
  cat "$prefix/start.err" "$prefix/error.log" >&2 2>/dev/null || true
  die "nginx did not start on $listen (port in use?)"
fi

# nginx daemonizes: wait for its pid file and for the port to accept connections.
host=${listen%:*} p=${listen##*:}
for _ in $(seq 100); do
  if [[ -s $prefix/nginx.pid ]] && (exec 3<>"/dev/tcp/$host/$p") 2>/dev/null; then
    pid=$(<"$prefix/nginx.pid")
    printf 'nginx CDN on http://%s/audio/ (pid %s; config, logs: %s)\n' "$listen" "$pid" "$prefix" >&2
    echo "$pid"
    trap - EXIT
    exit 0
  fi
  sleep 0.05
done
cat "$prefix/error.log" >&2 2>/dev/null || true
[[ -s $prefix/nginx.pid ]] && kill "$(<"$prefix/nginx.pid")" 2>/dev/null
die "nginx did not come up on $listen within 5 s"
