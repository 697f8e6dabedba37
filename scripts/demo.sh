#!/usr/bin/env bash
# Build trackfs (release) and run `trackfs demo`: a sample library served in-process on a
# free loopback port and mounted (default ./trackfs-demo). Ctrl-C unmounts and cleans up.
#
# Usage: scripts/demo.sh [MOUNTPOINT] [trackfs demo flags...]
#   The same as `cargo run --release -- demo [MOUNTPOINT]`.
#
# Why a script: it is the README's first command, so it must work on a fresh machine with
# nothing but the Rust toolchain and FUSE; it checks those two and says what is missing.
set -euo pipefail

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
  sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

command -v cargo >/dev/null || {
  echo "demo.sh: error: cargo not found; install Rust (https://rustup.rs) first" >&2
  exit 1
}
if ! command -v fusermount3 >/dev/null && [[ $(id -u) -ne 0 ]]; then
  echo "demo.sh: error: fusermount3 not found; install FUSE 3: sudo apt-get install -y fuse3" >&2
  exit 1
fi
[[ -e /dev/fuse ]] || {
  echo "demo.sh: error: /dev/fuse is missing (no FUSE in this kernel/container; try: sudo modprobe fuse)" >&2
  exit 1
}

# Build first (quietly) so cargo's output does not mix with the demo's instructions, and
# run the binary directly: Ctrl-C then goes to trackfs, which unmounts before exiting.
cargo build --release --quiet --manifest-path "$repo/Cargo.toml" --bin trackfs
# Where cargo put it (honours CARGO_TARGET_DIR and .cargo/config).
target_dir=$(cargo metadata --format-version 1 --no-deps --manifest-path "$repo/Cargo.toml" |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
target_dir=${target_dir:-${CARGO_TARGET_DIR:-$repo/target}}
exec "$target_dir/release/trackfs" demo "$@"
