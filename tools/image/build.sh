#!/usr/bin/env bash
# build.sh: `make image`. Builds the Dockerfile with docker when its daemon
# answers, else with podman (installed from Debian when missing). The public
# base images are used when they can be had (present or pulled); otherwise
# bases.sh makes local stand-ins and they are passed as build arguments, so
# the same Dockerfile builds on a machine that reaches no image registry.
# Environment: IMAGE (tag), VARIANT (cpu|gpu), BASES (auto|public|local),
# ENGINE (docker|podman), GO_VERSION.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
variant=${VARIANT:-cpu}
image=${IMAGE:-}
[ -n "$image" ] || { image=localhost/sous:dev; [ "$variant" = gpu ] && image=localhost/sous:dev-gpu; }
go_version=${GO_VERSION:?}
engine=$("$root/tools/image/engine.sh")
[ "$engine" = podman ] && export CONTAINERS_CONF=$root/tools/image/containers.conf

# The public bases, as the Dockerfile names them.
arg() { sed -n "s/^ARG $1=//p" "$root/Dockerfile"; }
go_image=$(arg GO_IMAGE)
base=$(arg CPU_BASE); [ "$variant" = gpu ] && base=$(arg GPU_BASE)
have() { $engine image inspect "$1" >/dev/null 2>&1 || $engine pull -q "$1" >/dev/null 2>&1; }

args=()
case ${BASES:-auto} in
public) ;;
local) read -ra args < <("$root/tools/image/bases.sh" "$engine" "$go_version") ;;
auto)
  if have "$go_image" && have "$base"; then
    echo "image: public bases $go_image, $base" >&2
  else
    echo "image: $go_image or $base cannot be had here; making local stand-ins" >&2
    read -ra args < <("$root/tools/image/bases.sh" "$engine" "$go_version")
  fi ;;
*) echo "BASES=$BASES: want auto, public or local" >&2; exit 2 ;;
esac
[ -n "${GOPROXY:-}" ] && args+=(--build-arg "GOPROXY=$GOPROXY")

start=$(date +%s)
$engine build --network host --build-arg VARIANT="$variant" "${args[@]}" -t "$image" "$root"
echo "image: $image ($variant, $engine) built in $(( $(date +%s) - start ))s" >&2
$engine image inspect --format '{{.Id}} {{.Size}}' "$image" |
  awk -v i="$image" '{ printf "image: %s %s %.1f MB\n", i, substr($1, 1, 19), $2 / 1e6 }' >&2
