#!/usr/bin/env bash
# The container image, built and run with podman where no image registry can
# be reached (docs/OPERATIONS.md, "The container image").
#
#   scripts/image.sh build   release binary (stripped), rootfs, image
#                            identify-connector:<version>; prints name and size
#   scripts/image.sh smoke   --version, --check of the chart's default config,
#                            then the demo's pipeline with the connector in the
#                            container (host network, read-only root, uid
#                            10001), a clean SIGTERM exit, offsets committed
#
# podman, runc and binutils come from Debian's packages (installed when
# missing). Podman reads deploy/image/containers.conf (CONTAINERS_CONF): the
# machine's own /etc/containers is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

version=$(awk -F'"' '/^version *=/ { print $2; exit }' Cargo.toml)
IMAGE=${IDENTIFY_IMAGE:-identify-connector:$version}
export CONTAINERS_CONF="$PWD/deploy/image/containers.conf"
work=target/image

need_podman() {
  local need=()
  command -v podman >/dev/null 2>&1 || need+=(podman)
  command -v runc >/dev/null 2>&1 || need+=(runc)
  command -v strip >/dev/null 2>&1 || need+=(binutils)
  if [ ${#need[@]} -gt 0 ]; then
    echo "image: installing ${need[*]}" >&2
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

# The rootfs the Containerfile copies: the stripped binary, the libraries
# `ldd` names (at the paths the loader looks in), CA certificates, the
# non-root user, the default config.
rootfs() {
  local bin=$1 root=$work/rootfs
  rm -rf "$work/rootfs" "$work/store"
  mkdir -p "$root/usr/local/bin" "$root/etc/identify-connector" "$root/etc/ssl/certs" "$root/tmp" "$work/store"
  chmod 1777 "$root/tmp"
  strip -o "$root/usr/local/bin/identify-connector" "$bin"
  local lib
  for lib in $(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
  cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
  printf 'root:x:0:0:root:/root:/usr/sbin/nologin\nidentify:x:10001:10001:identify-connector:/nonexistent:/usr/sbin/nologin\n' >"$root/etc/passwd"
  printf 'root:x:0:\nidentify:x:10001:\n' >"$root/etc/group"
  printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
  cp deploy/config.toml "$root/etc/identify-connector/config.toml"
  cp deploy/image/Containerfile "$work/Containerfile"
}

# The chart's default image must be the one built here.
check_chart() {
  local app repo
  app=$(awk -F'"' '/^appVersion:/ { print $2 }' helm/identify-connector/Chart.yaml)
  repo=$(awk '/^image:/ { f = 1 } f && /repository:/ { print $2; exit }' helm/identify-connector/values.yaml)
  if [ "$repo:$app" != "identify-connector:$version" ]; then
    echo "image: the chart's default image is $repo:$app, the build tags identify-connector:$version" >&2
    exit 1
  fi
}

build() {
  check_chart
  need_podman
  scripts/setup.sh
  local started=$SECONDS
  cargo build --release --locked --bin identify-connector
  echo "image: release build took $((SECONDS - started)) s"
  rootfs target/release/identify-connector
  podman build --quiet --label "org.opencontainers.image.version=$version" \
    --label "org.opencontainers.image.source=https://github.com/crustdata/identify-connector" \
    -t "$IMAGE" -f "$work/Containerfile" "$work" >/dev/null
  local size
  size=$(podman image inspect "$IMAGE" --format '{{.Size}}')
  echo "image: built $IMAGE, $((size / 1000000)) MB ($size bytes)"
}

smoke() {
  need_podman
  podman image exists "$IMAGE" || { echo "image: $IMAGE is not built (scripts/image.sh build)" >&2; exit 1; }
  echo "== $IMAGE --version"
  podman run --rm "$IMAGE" --version
  echo "== $IMAGE --check on the chart's default config (baked in)"
  podman run --rm --read-only -e CRUSTDATA_API_KEY=check-only "$IMAGE" \
    --config /etc/identify-connector/config.toml --check
  echo "== the demo's pipeline (Avro outputs, a local Schema Registry), the connector in the container"
  cargo build --locked -p crustdata-sim -q
  IDENTIFY_IMAGE="$IMAGE" scripts/demo.sh --registry
}

case "${1:-}" in
  build) build ;;
  smoke) smoke ;;
  *) echo "usage: $0 build|smoke" >&2; exit 2 ;;
esac
