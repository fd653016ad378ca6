#!/usr/bin/env bash
# images.sh: build every image the cluster runs and push it to the local
# registry ($REGISTRY, pulled by containerd as localhost:5000/...):
#   pause:3.10             Kubernetes' pause.c, static, on an empty image
#   sous-base/cc:bookworm  the distroless-like runtime base (tools/image)
#   coredns, traefik       their binaries on that base
#   dapr/<component>       operator, injector, sentry, placement, scheduler, daprd
#   redis:7                Debian's redis-server
#   knative/...            Knative Serving's and Eventing's controllers, by ko,
#                          which also writes the resolved manifests
#   hello                  the smoke test's Knative Service
set -euo pipefail
source "$(dirname "$0")/env.sh"
export CONTAINERS_CONF=$root/tools/image/containers.conf
reg=localhost:5000
ctx=$STATE/images
mkdir -p "$ctx" "$STATE/manifests"

version() { (cd "$cluster/$1" && go list -m -f '{{.Version}}' "$2"); }

push() { podman push -q --tls-verify=false "$1" "$2" >/dev/null; }

# build_push TAG DIR: podman build DIR (its Containerfile) and push as TAG.
build_push() {
  podman build -q --network host -t "$1" "$2" >"$LOGS/image-$(basename "$2").log" 2>&1 ||
    { tail -20 "$LOGS/image-$(basename "$2").log" >&2; exit 1; }
  push "$1" "$1"
}

# The local bases (debootstrap, runtime), made or reused by tools/image.
"$root/tools/image/bases.sh" podman 1.26.8 >/dev/null
base=localhost/sous-base/cc:bookworm
push "$base" "$reg/sous-base/cc:bookworm"

# pause
k8s=$(cd "$cluster/kubernetes" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)
mkdir -p "$ctx/pause"
gcc -static -O2 -DVERSION=3.10 -o "$ctx/pause/pause" "$k8s/build/pause/linux/pause.c"
cat >"$ctx/pause/Containerfile" <<'EOF'
FROM scratch
COPY pause /pause
USER 65535:65535
ENTRYPOINT ["/pause"]
EOF
build_push "$reg/pause:3.10" "$ctx/pause"

# one binary on the runtime base: binimage NAME TAG [BINARY...]
binimage() {
  local name=$1 tag=$2
  shift 2
  mkdir -p "$ctx/$name"
  {
    echo "FROM $base"
    for b in "$@"; do cp "$BIN/$b" "$ctx/$name/$b"; echo "COPY $b /$b"; done
    echo "USER 65532:65532"
    echo "ENTRYPOINT [\"/$1\"]"
  } >"$ctx/$name/Containerfile"
  build_push "$tag" "$ctx/$name"
}
binimage coredns "$reg/coredns:$(version coredns github.com/coredns/coredns)" coredns
binimage traefik "$reg/traefik:$(version traefik github.com/traefik/traefik/v3)" traefik

# Dapr: one image with every control plane binary at /, and one image per
# component on it that only sets the entrypoint: the chart runs /operator,
# /injector, ... as commands, but the injected sidecar gets only arguments,
# so the daprd image must start /daprd by itself.
dv=$(version dapr github.com/dapr/dapr); dv=${dv#v}
binimage dapr "$reg/dapr/dapr:$dv" operator injector sentry placement scheduler daprd
for c in operator injector sentry placement scheduler daprd; do
  mkdir -p "$ctx/dapr-$c"
  printf 'FROM %s\nENTRYPOINT ["/%s"]\n' "$reg/dapr/dapr:$dv" "$c" >"$ctx/dapr-$c/Containerfile"
  build_push "$reg/dapr/$c:$dv" "$ctx/dapr-$c"
done

# Redis from Debian, as a numeric non-root user (it writes nothing: no persistence).
mkdir -p "$ctx/redis"
cat >"$ctx/redis/Containerfile" <<'EOF'
FROM localhost/sous-base/debian:bookworm
RUN apt-get update && apt-get install -y --no-install-recommends redis-server && rm -rf /var/lib/apt/lists/*
USER 65532:65532
EXPOSE 6379
ENTRYPOINT ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", "--appendonly", "no"]
EOF
build_push "$reg/redis:7" "$ctx/redis"

# Knative with ko: the config/ trees from the module zips, with the files
# that the zips drop (they are symlinks in the repositories) put back from
# the modules they link to, resolved against tools/cluster/knative.
"$cluster/knative-config.sh" "$STATE/src"
mkdir -p "$STATE/ko"
cat >"$STATE/ko/.ko.yaml" <<EOF
defaultBaseImage: $reg/sous-base/cc:bookworm
EOF
(
  cd "$cluster/knative"
  # CGO off, as ko builds by default (make exports CGO_ENABLED=1 for sous).
  export KO_DOCKER_REPO=$reg/knative KOCACHE=$STATE/kocache KO_CONFIG_PATH=$STATE/ko GOFLAGS=-trimpath CGO_ENABLED=0
  for set in serving-core eventing-core in-memory-channel mt-channel-broker hello; do
    "$BIN/ko" resolve --insecure-registry --platform linux/amd64 --preserve-import-paths -R -f "$STATE/src/$set" \
      >"$STATE/manifests/$set.yaml" 2>>"$LOGS/ko.log" || { tail -30 "$LOGS/ko.log" >&2; exit 1; }
  done
)
