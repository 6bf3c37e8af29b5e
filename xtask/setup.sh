#!/usr/bin/env bash
# Project-owned set-up: installs what building and testing need, idempotent and
# quick when everything is already present. Called by `cargo xtask setup` (and
# so by `cargo xtask demo|test|bench`) and by .ci/run.
set -euo pipefail

log() { printf '[setup] %s\n' "$*" >&2; }

# --- Debian packages the lab and the tests use --------------------------------
pkgs=(bpftool iproute2 ethtool socat curl nginx-light tcpdump iputils-ping python3 procps wrk haproxy iperf3 hping3 netbase keepalived bird2 systemd chromium)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    log "missing Debian packages: ${missing[*]} (run as root to install them)"
  else
    log "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

# promtool (the prometheus package) validates lbd's /metrics in the e2e suite:
# without its recommends, and its server stopped if systemd started it.
if [ "$(id -u)" -eq 0 ] && ! command -v promtool >/dev/null 2>&1; then
  log "installing prometheus (for promtool)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  if [ -d /run/systemd/system ]; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
fi

# --- nightly toolchain with rust-src (for -Z build-std=core) ------------------
if ! rustup toolchain list | grep -q '^nightly'; then
  log "installing the nightly toolchain"
  rustup toolchain install nightly --component rust-src --profile minimal
fi
if ! rustup component list --toolchain nightly --installed | grep -q '^rust-src'; then
  log "adding rust-src to nightly"
  rustup component add rust-src --toolchain nightly
fi

# --- bpf-linker, linked against rustc's own libLLVM ---------------------------
sysroot=$(rustc +nightly --print sysroot)
llvm_major=$(rustc +nightly -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
nightly_hash=$(rustc +nightly -vV | sed -n 's/^commit-hash: //p')
llvm_dir="${CARGO_HOME:-$HOME/.cargo}/lb-llvm"
stamp="$llvm_dir/stamp"
want="llvm-$llvm_major nightly-$nightly_hash"
if ! command -v bpf-linker >/dev/null 2>&1 || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] \
   || ! bpf-linker --version >/dev/null 2>&1; then
  log "building bpf-linker against rustc's LLVM $llvm_major"
  rm -rf "$llvm_dir/lib"
  mkdir -p "$llvm_dir/lib"
  for f in "$sysroot"/lib/libLLVM.so.*; do
    ln -sf "$f" "$llvm_dir/lib/"
    ln -sf "$f" "$llvm_dir/lib/libLLVM.so"
  done
  LLVM_PREFIX="$llvm_dir" cargo install bpf-linker --locked --force \
    --no-default-features --features "llvm-$llvm_major"
  echo "$want" > "$stamp"
fi

# --- cargo-deb (cargo xtask package) -----------------------------------------
if ! cargo deb --version 2>/dev/null | grep -q '^cargo-deb 3\.8\.'; then
  log "installing cargo-deb 3.8"
  cargo install cargo-deb --version '~3.8' --locked
fi

# --- bpffs ---------------------------------------------------------------------
if [ "$(id -u)" -eq 0 ] && ! mountpoint -q /sys/fs/bpf; then
  log "mounting bpffs on /sys/fs/bpf"
  mount -t bpf bpf /sys/fs/bpf
fi
log "ok"
