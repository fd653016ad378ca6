#!/usr/bin/env bash
# build.sh [MODULE...]: build the cluster's binaries from the pinned tools
# modules (tools/cluster/<module>/go.mod) into .cache/cluster/bin. A module
# is rebuilt only when its go.mod, go.sum or this script changes (a stamp
# holds their hash). One go build per module, one module at a time: the
# machine has two cores and a link of kube-apiserver or Traefik takes 3 GB.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=$root/.cache/cluster/bin logs=$root/.cache/cluster/logs
mkdir -p "$bin" "$logs"
export CGO_ENABLED=0 GOFLAGS=-trimpath

modules=("$@")
[ ${#modules[@]} -gt 0 ] || modules=(kubernetes etcd coredns images traefik dapr)

# k8s.io/component-base and client-go print these; Knative refuses a server
# whose version does not parse ("v0.0.0-master+$Format:%H$").
k8s_version() {
  local v=$1 info time
  info=$(cd "$here/kubernetes" && go mod download -json "k8s.io/kubernetes@$v" | sed -n 's/^\t"Info": "\(.*\)",$/\1/p')
  time=$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "$info")
  local minor=${v#v1.}; minor=${minor%%.*}
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    printf -- '-X %s.gitVersion=%s -X %s.gitMajor=1 -X %s.gitMinor=%s -X %s.gitCommit=%s -X %s.gitTreeState=clean -X %s.buildDate=%s ' \
      "$pkg" "$v" "$pkg" "$pkg" "$minor" "$pkg" "$v" "$pkg" "$pkg" "$time"
  done
}

version() { # module path -> its required version in that tools module
  (cd "$here/$1" && go list -m -f '{{.Version}}' "$2")
}

build_module() {
  local m=$1 stamp="$bin/.$1.stamp" want
  want=$(cat "$here/$m/go.mod" "$here/$m/go.sum" "$0" | sha256sum | cut -c1-16)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "build: $m up to date"
    return
  fi
  local start=$SECONDS ldflags="-s -w" tags="" pkgs=()
  case $m in
  kubernetes)
    local v; v=$(version kubernetes k8s.io/kubernetes)
    ldflags+=" $(k8s_version "$v")"
    for c in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl kubeadm; do
      pkgs+=("k8s.io/kubernetes/cmd/$c")
    done ;;
  etcd)
    local v; v=$(version etcd go.etcd.io/etcd/server/v3)
    ldflags+=" -X go.etcd.io/etcd/api/v3/version.GitSHA=$v"
    pkgs=(go.etcd.io/etcd/server/v3=etcd go.etcd.io/etcd/etcdctl/v3=etcdctl) ;;
  coredns) pkgs=(github.com/coredns/coredns) ;;
  images)
    pkgs=(github.com/distribution/distribution/v3/cmd/registry github.com/google/go-containerregistry/cmd/crane
      github.com/google/ko helm.sh/helm/v3/cmd/helm) ;;
  traefik)
    local v; v=$(version traefik github.com/traefik/traefik/v3)
    ldflags+=" -X github.com/traefik/traefik/v3/pkg/version.Version=$v"
    pkgs=(github.com/traefik/traefik/v3/cmd/traefik) ;;
  dapr)
    local v; v=$(version dapr github.com/dapr/dapr)
    ldflags+=" -X github.com/dapr/dapr/pkg/buildinfo.version=${v#v}"
    # allcomponents: the sidecar must load state.redis and pubsub.redis.
    tags=allcomponents
    for c in operator injector sentry placement scheduler daprd; do pkgs+=("github.com/dapr/dapr/cmd/$c"); done ;;
  *) echo "build: unknown module $m" >&2; exit 2 ;;
  esac
  echo "build: $m (${#pkgs[@]} binaries; log in $logs/build-$m.log)"
  # One go build per binary (the build cache is shared): -o names each,
  # which a module-root main package (etcd's server/v3) needs.
  local p out
  : >"$logs/build-$m.log"
  for p in "${pkgs[@]}"; do
    out=${p#*=}; [ "$out" != "$p" ] || out=$(basename "$p"); p=${p%%=*}
    if ! (cd "$here/$m" && go build -tags "$tags" -ldflags "$ldflags" -o "$bin/$out.tmp" "$p") >>"$logs/build-$m.log" 2>&1; then
      tail -30 "$logs/build-$m.log" >&2
      exit 1
    fi
    mv "$bin/$out.tmp" "$bin/$out"
  done
  echo "$want" >"$stamp"
  echo "build: $m done in $((SECONDS - start))s"
}

for m in "${modules[@]}"; do build_module "$m"; done
