#!/usr/bin/env bash
# bases.sh ENGINE GO_VERSION: make the local stand-ins for the Dockerfile's
# public base images, for machines that reach no image registry:
#   localhost/sous-base/debian:bookworm   debootstrap --variant=minbase
#   localhost/sous-base/golang:GO_VERSION Debian + cgo tools + Go toolchain
#   localhost/sous-base/cc:bookworm       distroless/cc-like runtime
#   localhost/sous-base/cuda:standin      the runtime base without CUDA
# Each image carries a label with the hash of what made it (pins and
# Containerfiles) and is rebuilt only when that hash changes or the image is
# gone. Prints the build arguments that select the stand-ins.
set -euo pipefail
engine=$1 go_version=$2
here=$(cd "$(dirname "$0")" && pwd)
cache=${SOUS_IMAGE_CACHE:-$here/../../.cache/image}
suite=bookworm
mkdir -p "$cache"

# The machine's own extra CA certificates (a TLS-inspecting proxy's), which
# the build stage needs to reach the Go module proxy and the npm registry
# from here; they go into the local build base only, never the runtime one.
extra_ca=$(find /usr/local/share/ca-certificates -name '*.crt' 2>/dev/null | sort)
pin() { { echo "$suite $go_version"; cat "$@"; } | sha256sum | cut -c1-16; }
current() { # image pin: the image exists and was made from pin
  [ "$($engine image inspect --format '{{index .Labels "sous.pin"}}' "$1" 2>/dev/null)" = "$2" ]
}
log() { echo "bases: $*" >&2; }

debian=localhost/sous-base/debian:$suite
p=$(pin /dev/null)
if ! current "$debian" "$p"; then
  log "debootstrap $suite (about a minute)"
  # To stderr: this script's standard output is the build arguments.
  command -v debootstrap >/dev/null ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap; } >&2
  rm -rf "$cache/rootfs"
  debootstrap --variant=minbase "$suite" "$cache/rootfs" >"$cache/debootstrap.log" 2>&1 ||
    { tail -20 "$cache/debootstrap.log" >&2; exit 1; }
  rm -rf "$cache/rootfs/var/cache/apt/archives/"*.deb "$cache/rootfs/var/lib/apt/lists/"*
  tar -C "$cache/rootfs" -c . | $engine import --change "LABEL sous.pin=$p" --change 'CMD ["/bin/bash"]' - "$debian" >/dev/null
  rm -rf "$cache/rootfs"
fi

build() { # tag containerfile context-dir
  local tag=$1 file=$2 ctx=$3 p
  p=$(pin "$file" $extra_ca)
  current "$tag" "$p" && return 0
  log "building $tag"
  $engine build --network host --build-arg DEBIAN="$debian" --label sous.pin="$p" \
    -f "$file" -t "$tag" "$ctx" >"$cache/$(basename "$file").log" 2>&1 ||
    { tail -30 "$cache/$(basename "$file").log" >&2; exit 1; }
}

golang=localhost/sous-base/golang:$go_version-$suite
if ! current "$golang" "$(pin "$here/golang.Containerfile" $extra_ca)"; then
  # The toolchain as the Go module proxy serves it (checksummed by go).
  dir=$(GOFLAGS=-mod=mod go mod download -json "golang.org/toolchain@v0.0.1-go$go_version.linux-amd64" |
    sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  [ -f "$dir/bin/go" ] || { log "no Go toolchain $go_version from the module proxy"; exit 1; }
  rm -rf "$cache/golang" && mkdir -p "$cache/golang"
  cp -a "$dir" "$cache/golang/go" && chmod -R u+w "$cache/golang/go"
  # The module zip keeps no modes; go's own toolchain switch sets these.
  chmod +x "$cache/golang/go/bin/"* "$cache/golang/go/pkg/tool/"*/*
  mkdir -p "$cache/golang/extra-ca"
  [ -z "$extra_ca" ] || cp $extra_ca "$cache/golang/extra-ca/"
  build "$golang" "$here/golang.Containerfile" "$cache/golang"
  rm -rf "$cache/golang"
fi

runtime=localhost/sous-base/cc:$suite
mkdir -p "$cache/empty"
build "$runtime" "$here/runtime.Containerfile" "$cache/empty"
cuda=localhost/sous-base/cuda:standin
$engine tag "$runtime" "$cuda"

echo "--build-arg GO_IMAGE=$golang --build-arg CPU_BASE=$runtime --build-arg GPU_BASE=$cuda"
