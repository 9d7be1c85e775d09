#!/usr/bin/env bash
# Provide promtool (Prometheus's own PromQL engine, offline) for tests/test_promql_promtool.py,
# without internet access beyond Debian's archive.
#
#   export PATH="$(bash .ci/provision-promtool.sh | tail -1):$PATH"
#
# The last stdout line is a directory holding an executable `promtool`. When one is already on PATH,
# that one's directory; else the cache's, when its promtool answers `--version`; else
# `apt-get download prometheus` (Debian's package: downloaded only, not installed, so no
# maintainer scripts run and no service starts; `apt-get update` first only if that fails), and
# `dpkg-deb -x` of it into a scratch directory, from which only usr/bin/promtool is kept.
# Progress and errors go to stderr.
#
# Environment:
#   KPILOT_PROMTOOL_DIR   cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/kpilot/promtool)
set -euo pipefail

if found="$(command -v promtool)"; then
  dirname "$found"
  exit 0
fi

ROOT="${KPILOT_PROMTOOL_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kpilot/promtool}"
mkdir -p "$ROOT"
ROOT="$(cd "$ROOT" && pwd)"
BIN="$ROOT/bin"
binary_ok() { [ -x "$BIN/promtool" ] && "$BIN/promtool" --version >/dev/null 2>&1; }

if binary_ok; then
  echo "$BIN"
  exit 0
fi

# One provisioner at a time per cache directory.
exec 9>"$ROOT/.lock"
flock 9
if binary_ok; then
  echo "$BIN"
  exit 0
fi

START=$SECONDS
log() { echo "[provision-promtool +$((SECONDS - START))s] $*" >&2; }
SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  SUDO="sudo -n"
fi
# As root, apt's download sandbox user (_apt) could not write into the scratch directory.
sandbox=()
[ "$(id -u)" = 0 ] && sandbox=(-o APT::Sandbox::User=root)

WORK="$(mktemp -d "$ROOT/work.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
download() { (cd "$WORK" && apt-get "${sandbox[@]}" download -q prometheus >&2); }
log "apt-get download prometheus"
if ! download; then
  log "apt-get update, then download again"
  $SUDO apt-get update -q >&2
  download
fi
deb=("$WORK"/prometheus_*.deb)
[ -f "${deb[0]}" ] || { log "apt-get download left no prometheus_*.deb"; exit 1; }
log "extracting usr/bin/promtool from $(basename "${deb[0]}")"
dpkg-deb -x "${deb[0]}" "$WORK/root"
rm -rf "$BIN.tmp"
mkdir -p "$BIN.tmp"
install -m 0755 "$WORK/root/usr/bin/promtool" "$BIN.tmp/promtool"
"$BIN.tmp/promtool" --version >&2
rm -rf "$BIN"
mv "$BIN.tmp" "$BIN"
binary_ok
log "done in $((SECONDS - START))s"
echo "$BIN"
