#!/usr/bin/env bash
# Installs everything lynq's tests, benchmarks and demo need on a Debian bookworm machine, and does
# nothing when it is already present. Idempotent; safe to run on every test run.
#   - Debian packages: etcd-server, mariadb-server, postgresql, prometheus (promtool, and a Prometheus the
#     tests start themselves), golang-go, rsync (+ build helpers)
#   - kube-apiserver and kube-controller-manager v1.20.2, built once from Debian's source package
#     into ~/.cache/lynq/k8s-v1.20.2/ (or $KUBE_ASSETS / $KUBEBUILDER_ASSETS when those hold them).
set -euo pipefail

K8S_VERSION_DIR="${LYNQ_CACHE:-$HOME/.cache/lynq}/k8s-v1.20.2"
K8S_SRC_PKG="kubernetes=1.20.5+really1.20.2-1.1+deb12u1"
log() { printf '[setup] %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    log "need root for: $*"; exit 1; fi
}

apt_updated=0
apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ $apt_updated = 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
  log "installing Debian packages: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Installs Debian packages whose daemon must not run machine-wide: the tests start their own instance on a
# free port. policy-rc.d (honoured by invoke-rc.d and deb-systemd-invoke) keeps the package scripts from
# starting it; the service is also disabled so that it does not start at the next boot either.
apt_install_no_daemon() {
  local pkg=$1 policy=/usr/sbin/policy-rc.d
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" && return 0
  local own_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null && as_root chmod 0755 "$policy"
    own_policy=1
    trap 'as_root rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt_install "$pkg"
  if [ $own_policy = 1 ]; then as_root rm -f "$policy"; trap - EXIT; fi
  if command -v systemctl >/dev/null; then as_root systemctl disable "$pkg" >/dev/null 2>&1 || true; fi
  if command -v update-rc.d >/dev/null; then as_root update-rc.d "$pkg" disable >/dev/null 2>&1 || true; fi
}

assets_dir_ok() { [ -x "$1/kube-apiserver" ] && [ -x "$1/kube-controller-manager" ]; }
# Our own build carries this marker: binaries built without the reflect2 fix crash under load.
BUILD_MARKER=".lynq-build-reflect2-1.0.2"

build_control_plane() {
  for d in "${KUBE_ASSETS:-}" "${KUBEBUILDER_ASSETS:-}"; do
    if [ -n "$d" ] && assets_dir_ok "$d"; then log "control plane binaries present in $d"; return 0; fi
  done
  if assets_dir_ok "$K8S_VERSION_DIR" && [ -f "$K8S_VERSION_DIR/$BUILD_MARKER" ]; then
    log "control plane binaries present in $K8S_VERSION_DIR"; return 0
  fi
  apt_install golang-go rsync dpkg-dev build-essential golang-github-modern-go-reflect2-dev
  if ! grep -rqsE '^(deb-src |Types:.*deb-src)' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    log "adding a deb-src entry for Debian bookworm main"
    # deb822 form, with the same keyring as the machine's own Debian sources (apt refuses mixed Signed-By).
    printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' |
      as_root tee /etc/apt/sources.list.d/lynq-src.sources >/dev/null
    as_root apt-get update -qq; apt_updated=1
  fi
  local work; work="$(mktemp -d "${TMPDIR:-/tmp}/lynq-k8s-build.XXXXXX")"
  trap 'rm -rf "$work"' RETURN
  log "downloading the Kubernetes v1.20.2 source package"
  (cd "$work" && apt-get source --download-only -qq "$K8S_SRC_PKG" >/dev/null)
  local orig; orig="$(ls "$work"/kubernetes_*.orig.tar.gz | head -n1)"
  mkdir -p "$work/src"; tar -xzf "$orig" -C "$work/src" --strip-components=1
  # Kubernetes 1.20 vendors modern-go/reflect2 v1.0.1, which segfaults in map iteration when built
  # with Go >= 1.18 (Debian bookworm has 1.19): the apiserver dies on its first CRD writes. v1.0.2 is
  # the upstream fix and API-compatible; Debian packages it.
  local reflect2=/usr/share/gocode/src/github.com/modern-go/reflect2
  rm -rf "$work/src/vendor/github.com/modern-go/reflect2"
  mkdir -p "$work/src/vendor/github.com/modern-go/reflect2"
  find "$reflect2" -maxdepth 1 -name '*.go' ! -name '*_test.go' -exec cp {} "$work/src/vendor/github.com/modern-go/reflect2/" \;
  log "building kube-apiserver and kube-controller-manager (about 4 minutes on 2 cores)"
  (
    cd "$work/src"
    export GOPATH="$work/src/.go" GOFLAGS=-mod=vendor CGO_ENABLED=0 GOCACHE="$work/gocache" GO111MODULE=on
    mkdir -p .go/src/k8s.io && ln -sfn "$work/src" .go/src/k8s.io/kubernetes
    make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" >"$work/build.log" 2>&1 || { tail -50 "$work/build.log" >&2; exit 1; }
  )
  mkdir -p "$K8S_VERSION_DIR"
  install -m 0755 "$work/src/_output/bin/kube-apiserver" "$work/src/_output/bin/kube-controller-manager" "$K8S_VERSION_DIR/"
  touch "$K8S_VERSION_DIR/$BUILD_MARKER"
  log "control plane binaries installed in $K8S_VERSION_DIR"
}

apt_install etcd-server mariadb-server postgresql ca-certificates
apt_install_no_daemon prometheus
build_control_plane
# kubectl with its built-in kustomize (v5) is part of the machine image here; Debian's kubernetes-client
# (1.20) carries a kustomize too old for manifests/, so it is required rather than installed.
command -v kubectl >/dev/null || { echo "[setup] kubectl (>= 1.27, with kustomize v5) is required on PATH" >&2; exit 1; }
log "ready"
