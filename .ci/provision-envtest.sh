#!/usr/bin/env bash
# Provision the envtest binaries (kube-apiserver + etcd) without internet access beyond Debian's archive.
#
#   export KUBEBUILDER_ASSETS="$(bash .ci/provision-envtest.sh | tail -1)"
#
# The last stdout line is the directory holding `kube-apiserver` and `etcd` (controller-runtime's
# KUBEBUILDER_ASSETS convention). Idempotent: when both binaries are already there and answer
# `--version`, nothing else happens. Otherwise:
#   1. apt-get installs etcd-server, golang-go, rsync, jq, dpkg-dev and golang-github-modern-go-reflect2-dev;
#   2. adds a deb-src entry for Debian's own archive (bookworm; bullseye as a fallback) and runs
#      `apt-get source kubernetes` (Kubernetes 1.20 with vendor/);
#   3. replaces vendor/github.com/modern-go/reflect2 (1.0.1) with Debian's 1.0.2: with Go >= 1.18 the
#      1.0.1 copy makes kube-apiserver crash on its first custom-resource write;
#   4. restores the Go-1.15 behaviour of the vendored OpenAPI type validator (kube-openapi and
#      go-openapi validate/type.go): it tests "is null" with
#      reflect.DeepEqual(reflect.Zero(T), reflect.ValueOf(data)), which Go >= 1.19 makes true for
#      every empty string (reflect.Zero and string->interface now share runtime.zeroVal), so a
#      Go-1.19 build rejects `default: ""` in CRD schemas and any "" in a custom resource with
#      "must be of type string: null". Upstream 1.20.2 release binaries (Go 1.15) accept both;
#      the patch makes the check `data == nil`, which is what it amounted to under Go 1.15;
#   5. builds cmd/kube-apiserver the way the package's debian/rules does (GOPATH layout, CGO off);
#   6. copies kube-apiserver and /usr/bin/etcd into the bin directory and checks `--version`.
# The bin directory carries a RECIPE stamp; a change to this recipe rebuilds.
# Quiet: everything goes to $ROOT/provision.log; on failure its tail goes to stderr.
#
# Environment:
#   KPILOT_ENVTEST_DIR       cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/kpilot/envtest)
#   KPILOT_ENVTEST_KEEP_SRC  1 keeps the source tree and Go build cache after a successful build
#   KPILOT_ENVTEST_VERBOSE   1 also copies the log to stderr as it is written
set -euo pipefail

ROOT="${KPILOT_ENVTEST_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kpilot/envtest}"
BIN="$ROOT/bin"
WORK="$ROOT/work"
LOG="$ROOT/provision.log"
mkdir -p "$ROOT"
ROOT="$(cd "$ROOT" && pwd)"
BIN="$ROOT/bin"; WORK="$ROOT/work"; LOG="$ROOT/provision.log"

# Bump when the build recipe changes: cached binaries with another stamp are rebuilt.
RECIPE="k8s-1.20-debian+reflect2-1.0.2+openapi-zero-fix"
binaries_ok() {
  [ "$(cat "$BIN/RECIPE" 2>/dev/null)" = "$RECIPE" ] &&
  [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/etcd" ] &&
    "$BIN/kube-apiserver" --version >/dev/null 2>&1 &&
    "$BIN/etcd" --version >/dev/null 2>&1
}

if binaries_ok; then
  echo "$BIN"
  exit 0
fi

# One provisioner at a time per cache directory.
exec 9>"$ROOT/.lock"
flock 9
if binaries_ok; then
  echo "$BIN"
  exit 0
fi

: >"$LOG"
if [ "${KPILOT_ENVTEST_VERBOSE:-0}" = 1 ]; then
  exec 3>&1 4>&2 > >(tee -a "$LOG" >&2) 2>&1
else
  exec 3>&1 4>&2 >>"$LOG" 2>&1
fi
START=$SECONDS
log() { echo "[provision-envtest +$((SECONDS - START))s] $*"; }
on_exit() {
  local rc=$?
  if [ "$rc" != 0 ]; then
    {
      echo "provision-envtest: FAILED (exit $rc); last 60 lines of $LOG:"
      tail -n 60 "$LOG"
    } >&4
  fi
  exit "$rc"
}
trap on_exit EXIT
trap 'echo "provision-envtest: command failed (exit $?) at line $LINENO: $BASH_COMMAND"' ERR
set -E

SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  fi
fi
export DEBIAN_FRONTEND=noninteractive

PKGS=(etcd-server golang-go rsync jq dpkg-dev golang-github-modern-go-reflect2-dev make ca-certificates)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
apt_update() { log "apt-get update"; $SUDO apt-get update -q; }
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]}"
  if ! $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"; then
    apt_update
    $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
fi

existing_src=$(ls -d "$WORK"/src/kubernetes-*/ 2>/dev/null | head -1 || true)
if [ -z "$existing_src" ]; then
  # Need the source package: make sure a deb-src entry exists.
  has_src() { apt-cache showsrc kubernetes 2>/dev/null | grep -q '^Version: 1\.20\.'; }
  for suite in bookworm bullseye; do
    has_src && break
    log "adding deb-src for Debian $suite"
    $SUDO tee "/etc/apt/sources.list.d/kpilot-deb-src-$suite.sources" >/dev/null <<EOF
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: $suite
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    apt_update
  done
  has_src || { log "no Kubernetes 1.20 source package found in Debian's archive"; false; }
  ver=$(apt-cache showsrc kubernetes | awk '/^Version: 1\.20\./ {print $2}' | sort -V | tail -1)
  rm -rf "$WORK/src.tmp"
  mkdir -p "$WORK/src.tmp"
  log "apt-get source kubernetes=$ver"
  sandbox=()
  [ "$(id -u)" = 0 ] && sandbox=(-o APT::Sandbox::User=root)
  (cd "$WORK/src.tmp" && apt-get "${sandbox[@]}" source -q "kubernetes=$ver")
  rm -rf "$WORK/src"
  mv "$WORK/src.tmp" "$WORK/src"
fi
SRC=$(ls -d "$WORK"/src/kubernetes-*/ | head -1)
SRC="${SRC%/}"
log "source tree: $SRC"

# Kubernetes version from the Debian version: 1.20.5+really1.20.2 -> 1.20.2.
upver=$(basename "$SRC"); upver="${upver#kubernetes-}"; upver="${upver##*really}"
IFS=. read -r kmaj kmin _ <<<"$upver"

# reflect2 1.0.1 -> Debian's 1.0.2 (Go >= 1.18 support). Only the package's sources; no tests, no go.mod.
R2_SYS=/usr/share/gocode/src/github.com/modern-go/reflect2
R2_VENDOR="$SRC/vendor/github.com/modern-go/reflect2"
if [ ! -f "$R2_VENDOR/go_above_118.go" ]; then
  log "replacing vendored reflect2 with Debian's $(dpkg-query -W -f='${Version}' golang-github-modern-go-reflect2-dev)"
  rm -rf "$R2_VENDOR"
  mkdir -p "$R2_VENDOR"
  rsync -a --include='*.go' --include='*.s' --include='LICENSE' --exclude='*_test.go' --exclude='*' \
    "$R2_SYS/" "$R2_VENDOR/"
fi

for f in vendor/k8s.io/kube-openapi/pkg/validation/validate/type.go vendor/github.com/go-openapi/validate/type.go; do
  [ -f "$SRC/$f" ] || continue
  if grep -q 'reflect.DeepEqual(reflect.Zero(reflect.TypeOf(data)), reflect.ValueOf(data))' "$SRC/$f"; then
    log "patching $f: null check 'data == nil' (Go >= 1.19 zero-value aliasing)"
    sed -i 's/if data == nil || reflect.DeepEqual(reflect.Zero(reflect.TypeOf(data)), reflect.ValueOf(data)) {/if data == nil { \/\/ kpilot envtest: Go >= 1.19 aliases reflect.Zero and "" (runtime.zeroVal)/' "$SRC/$f"
  fi
  if grep -q 'reflect.DeepEqual(reflect.Zero(reflect.TypeOf(data))' "$SRC/$f"; then
    echo "provision-envtest: patching $f did not take" >&2; exit 1
  fi
done

cat >"$WORK/version.env" <<EOF
KUBE_GIT_COMMIT='debian-$(basename "$SRC")'
KUBE_GIT_TREE_STATE='clean'
KUBE_GIT_VERSION='v$upver'
KUBE_GIT_MAJOR='$kmaj'
KUBE_GIT_MINOR='$kmin'
EOF

log "building cmd/kube-apiserver ($(go version))"
mkdir -p "$SRC/.go/src/k8s.io" "$WORK/home" "$WORK/gocache"
[ -L "$SRC/.go/src/k8s.io/kubernetes" ] || ln -s ../../.. "$SRC/.go/src/k8s.io/kubernetes"
(
  cd "$SRC"
  env GOPATH="$SRC/.go" CGO_ENABLED=0 HOME="$WORK/home" GOCACHE="$WORK/gocache" \
    GOFLAGS= KUBE_GIT_VERSION_FILE="$WORK/version.env" \
    make WHAT=cmd/kube-apiserver
)
built="$SRC/_output/local/bin/linux/$(go env GOARCH)/kube-apiserver"
[ -x "$built" ] || built="$SRC/_output/bin/kube-apiserver"

mkdir -p "$BIN.tmp"
install -m 0755 "$built" "$BIN.tmp/kube-apiserver"
install -m 0755 "$(command -v etcd || echo /usr/bin/etcd)" "$BIN.tmp/etcd"
{
  "$BIN.tmp/kube-apiserver" --version
  "$BIN.tmp/etcd" --version | head -1
  echo "source: Debian kubernetes $(basename "$SRC"), vendored reflect2 replaced by $(dpkg-query -W -f='${Version}' golang-github-modern-go-reflect2-dev)"
  echo "patched: vendor/k8s.io/kube-openapi + vendor/github.com/go-openapi validate/type.go null check (data == nil)"
} | tee "$BIN.tmp/VERSIONS"
echo "$RECIPE" >"$BIN.tmp/RECIPE"
rm -rf "$BIN"
mv "$BIN.tmp" "$BIN"
binaries_ok

if [ "${KPILOT_ENVTEST_KEEP_SRC:-0}" != 1 ]; then
  log "removing source tree and build cache (KPILOT_ENVTEST_KEEP_SRC=1 keeps them)"
  chmod -R u+w "$WORK" 2>/dev/null || true
  rm -rf "$WORK"
fi
log "done in $((SECONDS - START))s"
echo "$BIN" >&3
