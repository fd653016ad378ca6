#!/usr/bin/env bash
# run.sh [go test flags]: make e2e. Brings up the local cluster if none
# answers, builds sous's image (make image), pushes it to the cluster's
# registry, and runs the end-to-end tests (TestSous*) against it, with the
# image named by the digest the registry gave. Prometheus (Debian's) is
# installed for the metrics test when missing.
set -euo pipefail
source "$(dirname "$0")/../cluster/env.sh"
export CONTAINERS_CONF=$root/tools/image/containers.conf

if ! kubectl get --raw /readyz >/dev/null 2>&1; then
  log "no cluster answers: make cluster"
  "$cluster/up.sh"
fi
command -v prometheus >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus
} >&2

image=${IMAGE:-localhost/sous:dev}
make -C "$root" --no-print-directory image ENGINE=podman IMAGE="$image"
mkdir -p "$root/.cache/e2e"
podman push -q --tls-verify=false --digestfile "$root/.cache/e2e/digest" "$image" "$REGISTRY/sous:e2e"
export SOUS_E2E_IMAGE="localhost:5000/sous@$(cat "$root/.cache/e2e/digest")"
log "sous image $SOUS_E2E_IMAGE"

cd "$root/tools/e2e"
exec go test -count=1 -timeout 60m -v -run "${E2E_RUN:-TestSous}" "$@" ./...
