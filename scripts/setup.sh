#!/usr/bin/env bash
# Installs what a fresh machine lacks to build, test and demo the connector:
# a C toolchain, cmake and OpenSSL headers (librdkafka is built from source
# by rdkafka-sys), Java 17+ and Maven (the local Kafka broker), Python 3 with
# venv (chart checks) and Rust (stable, through rustup). Idempotent: it only
# installs what is missing.
set -euo pipefail

need_apt=()
have() { command -v "$1" >/dev/null 2>&1; }
have cc || need_apt+=(build-essential)
have cmake || need_apt+=(cmake)
have pkg-config || need_apt+=(pkg-config)
have java || need_apt+=(openjdk-17-jre-headless)
have mvn || need_apt+=(maven)
have curl || need_apt+=(curl)
have python3 || need_apt+=(python3 python3-venv)
dpkg -s libssl-dev >/dev/null 2>&1 || need_apt+=(libssl-dev)
dpkg -s zlib1g-dev >/dev/null 2>&1 || need_apt+=(zlib1g-dev)

if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}" >&2
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! have cargo && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! have cargo; then
  echo "setup: no Rust toolchain found; install stable Rust with rustup (https://rustup.rs), with rustfmt and clippy" >&2
  exit 1
fi
