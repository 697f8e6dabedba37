#!/usr/bin/env bash
# Run trackfs's whole test suite, installing the system tools the tests drive when missing.
#
# Usage: scripts/test.sh [TEST FILTER...]
#   First `cargo fmt --check` and `cargo clippy --all-targets -- -D warnings`; then, with no
#   arguments, doctests and every unit/integration test (cargo nextest if present, else
#   cargo test). Arguments are passed to the runner as test-name filters.
#
# Environment:
#   CI=true   FUSE tests must run: fail up front if /dev/fuse or fusermount3 is unusable,
#             instead of letting tests skip themselves.
#
# Why this shape: CI and developers run the very same command (.ci/run calls it); the tests
# mount real FUSE filesystems and drive real programs (ffmpeg, mpv, rsync, nginx), which a
# fresh machine does not have, so we install exactly what is missing and nothing on re-runs.
# Format and lints go first: they take seconds and are what a reviewer would reject first.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
  sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'test.sh: error: %s\n' "$*" >&2; exit 1; }

# --- 1. System tools the tests use: "command it provides" -> "Debian package" -------------
# (ffprobe comes with ffmpeg. `nginx`, not `nginx-light`: on Debian 12 the latter is only a
# transitional package pulling in nginx plus an extra module, and not in every release.)
declare -A PKG_FOR=(
  [fusermount3]=fuse3
  [ffmpeg]=ffmpeg
  [ffprobe]=ffmpeg
  [nginx]=nginx
  [rsync]=rsync
  [mpv]=mpv
  [openssl]=openssl
  [curl]=curl
  [python3]=python3
  [mpd]=mpd
  [mpc]=mpc
)

have() {
  # nginx lives in /usr/sbin, which a non-root PATH may not include.
  command -v "$1" >/dev/null 2>&1 || [[ -x "/usr/sbin/$1" ]] || [[ -x "/sbin/$1" ]]
}

missing_pkgs=()
for cmd in "${!PKG_FOR[@]}"; do
  if ! have "$cmd"; then
    pkg=${PKG_FOR[$cmd]}
    [[ " ${missing_pkgs[*]-} " == *" $pkg "* ]] || missing_pkgs+=("$pkg")
  fi
done

if ((${#missing_pkgs[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    die "missing tools for the tests; install them with:
    sudo apt-get install -y ${missing_pkgs[*]}"
  fi
  command -v apt-get >/dev/null || die "missing ${missing_pkgs[*]} and no apt-get to install them"
  log "installing missing test tools: ${missing_pkgs[*]} (apt-get, once)"
  # Installing nginx or mpd would start a system nginx on port 80 or a system mpd on port
  # 6600; the tests start their own private ones, so keep package scripts from starting
  # services (the Docker convention: a policy-rc.d that says no).
  policy=/usr/sbin/policy-rc.d
  made_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1
  fi
  apt_log=$(mktemp)
  if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing_pkgs[@]}"; } >"$apt_log" 2>&1; then
    ((made_policy)) && rm -f "$policy"
    tail -n 30 "$apt_log" >&2
    die "apt-get install ${missing_pkgs[*]} failed (full log: $apt_log)"
  fi
  ((made_policy)) && rm -f "$policy"
  rm -f "$apt_log"
  for cmd in "${!PKG_FOR[@]}"; do have "$cmd" || die "$cmd still missing after installing ${PKG_FOR[$cmd]}"; done
fi

# --- 2. FUSE: in CI it must work, so say why it does not rather than skipping tests ------
fuse_problem=""
if [[ ! -e /dev/fuse ]]; then
  # The module may just not be loaded (root only).
  if [[ $(id -u) -eq 0 ]]; then modprobe fuse 2>/dev/null || true; fi
  [[ -e /dev/fuse ]] || fuse_problem="/dev/fuse does not exist (no FUSE in this kernel/container)"
fi
if [[ -z $fuse_problem && ! -r /dev/fuse ]] && [[ $(id -u) -ne 0 ]]; then
  fuse_problem="/dev/fuse is not readable by $(id -un)"
fi
if [[ -n $fuse_problem ]]; then
  if [[ ${CI:-} == true ]]; then
    die "CI=true requires FUSE tests to run, but $fuse_problem"
  fi
  log "warning: $fuse_problem; FUSE tests will skip (set CI=true to make this an error)"
fi

# --- 3. Format and lints: the habits CI holds every change to --------------------------
log "cargo fmt --check"
cargo fmt --check || die "formatting differs (run: cargo fmt)"
log "cargo clippy --all-targets -- -D warnings"
cargo clippy --quiet --all-targets -- -D warnings || die "clippy found problems (see above)"

# --- 4. The suite ---------------------------------------------------------------------
export RUST_BACKTRACE=${RUST_BACKTRACE:-1}
# Incremental caches double target/ and buy nothing on a one-shot CI build.
if [[ ${CI:-} == true ]]; then export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}; fi
# Say so up front when the disk is nearly full: the linker dies of it with a bus error.
# Measured 2026-12-03 (Cargo.toml's dev profile: line tables only): this script from a clean
# target/ left it at 1.6 GiB with CARGO_INCREMENTAL=0 (incremental caches, on by default
# outside CI, come on top). Warn with less than about twice that free.
free_kib=$(df -Pk . | awk 'NR == 2 {print $4}')
if [[ -n $free_kib ]] && ((free_kib < 4 * 1024 * 1024)); then
  log "warning: only $((free_kib / 1024)) MiB free here; building the tests needs about 2 GiB"
fi

if cargo nextest --version >/dev/null 2>&1; then
  # nextest runs each test in its own process (a crashed FUSE test cannot take others with
  # it), kills hung tests (scripts/nextest.toml), and lists failures last. It does not run
  # doctests, so those go first: nextest's summary stays the closing line.
  doc_status=0
  if (($# == 0)) && [[ -f src/lib.rs ]]; then
    # Shown only when they fail: a passing run of (so far no) doctests is noise.
    log "cargo test --doc"
    doc_log=$(mktemp)
    cargo test --doc --quiet >"$doc_log" 2>&1 || { doc_status=$?; cat "$doc_log" >&2; }
    rm -f "$doc_log"
  fi
  log "cargo nextest run --all-targets $*"
  test_status=0
  cargo nextest run --all-targets \
    --tool-config-file "trackfs-scripts:$PWD/scripts/nextest.toml" \
    "$@" || test_status=$?
  if ((doc_status != 0)); then
    die "doctests FAILED (see above: cargo test --doc)"
  fi
  ((test_status == 0)) || die "tests FAILED (nextest exit $test_status; failures listed above)"
else
  log "cargo nextest not found; using cargo test --all-targets $*"
  cargo test --all-targets --no-fail-fast -- "$@" || die "tests FAILED (see 'failures:' above)"
fi

# A test killed mid-mount can leave a stale FUSE mount behind; name it rather than hide it.
# Field 1 of /proc/mounts is the filesystem's name (trackfs mounts with fsname `trackfs…`);
# field 3 is the type (`fuse` or `fuse.trackfs`), which does not say whose it is.
if stale=$(awk '$1 ~ /trackfs/ {print $2}' /proc/mounts 2>/dev/null) && [[ -n $stale ]]; then
  log "warning: trackfs mounts still present after the tests (fusermount3 -u them):"
  printf '    %s\n' "$stale" >&2
fi
