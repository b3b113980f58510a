#!/usr/bin/env bash
# Builds Herald's Debian package with cargo-deb (installed here, pinned, when missing): the binary, a commented
# /etc/herald/herald.toml, the hardened systemd unit and its user (packaging/). Prints the .deb's path last.
#
#   scripts/package.sh              a release build (what to ship)
#   scripts/package.sh --test       the binary of the quickest fresh build, for scripts/test-package.sh: the release
#                                   one if a release build exists (cargo brings it up to date), else the debug one
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
if [ "$(cargo deb --version 2>/dev/null | awk '{print $2}')" != "$CARGO_DEB_VERSION" ]; then
  echo "package: installing cargo-deb $CARGO_DEB_VERSION" >&2
  cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION" --quiet
fi

target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
out="$target_dir/debian"
mkdir -p "$out"

if [ "${1:-}" != "--test" ]; then
  cargo deb -p herald --output "$out" >&2
else
  # cargo-deb refuses the dev profile, so a debug binary is packed from a staged target directory: cargo-deb reads
  # `target/release/herald` of whatever directory it is given, and --no-build leaves the build to us.
  if [ -x "$target_dir/release/herald" ]; then
    cargo build -p herald --release --bin herald >&2
    binary="$target_dir/release/herald"
  else
    cargo build -p herald --bin herald >&2
    binary="$target_dir/debug/herald"
  fi
  stage="$target_dir/deb-test-stage"
  mkdir -p "$stage/release"
  cp "$binary" "$stage/release/herald"
  CARGO_TARGET_DIR="$stage" cargo deb -p herald --no-build --fast --output "$out" >&2
fi
ls -t "$out"/herald_*.deb | head -1
