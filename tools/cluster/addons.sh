#!/usr/bin/env bash
# addons.sh: the cluster's workloads, from their projects' own manifests:
# CoreDNS, Traefik (Knative's networking layer), Knative Serving and
# Eventing (as ko resolved them in images.sh), the Dapr control plane
# (Dapr's Helm chart, rendered by helm) and Redis. Each change this machine
# needs is made here, with its reason.
set -euo pipefail
source "$(dirname "$0")/env.sh"
reg=localhost:5000
m=$cluster/manifests
version() { (cd "$cluster/$1" && go list -m -f '{{.Version}}' "$2"); }

# apply FILE...: server-side apply; retried while CRDs and webhooks that the
# same files define come up.
apply() {
  local f
  for f in "$@"; do
    wait_for "apply $(basename "$f")" 180 kubectl apply --server-side --force-conflicts -f "$f"
  done
}
image() { sed "s#image: IMAGE#image: $2#" "$1"; }

# wait_ready NAMESPACE: every Deployment and StatefulSet there is ready.
wait_ready() {
  wait_for "deployments in $1" 600 kubectl -n "$1" wait --for=condition=Available deployment --all --timeout=10s
  if [ -n "$(kubectl -n "$1" get statefulset -o name)" ]; then
    wait_for "statefulsets in $1" 600 kubectl -n "$1" rollout status statefulset --timeout=10s
  fi
}

# Small requests: the node has 2 cores and Knative and Dapr ask for more
# than one of them by default; requests only guide scheduling here.
shrink() {
  kubectl -n "$1" set resources deployment --all --requests=cpu=10m,memory=32Mi >/dev/null
  if [ -n "$(kubectl -n "$1" get statefulset -o name)" ]; then
    kubectl -n "$1" set resources statefulset --all --requests=cpu=10m,memory=32Mi >/dev/null
  fi
}

log "CoreDNS"
image "$m/coredns.yaml" "$reg/coredns:$(version coredns github.com/coredns/coredns)" >"$STATE/manifests/coredns.yaml"
apply "$STATE/manifests/coredns.yaml"

log "Redis"
image "$m/redis.yaml" "$reg/redis:7" >"$STATE/manifests/redis.yaml"
apply "$STATE/manifests/redis.yaml"

log "Knative Serving"
apply "$STATE/manifests/serving-core.yaml"
# Traefik's Knative provider serves KIngresses of this class.
kubectl -n knative-serving patch configmap config-network --type merge \
  -p '{"data":{"ingress-class":"traefik.ingress.networking.knative.dev"}}' >/dev/null
# Routes are <name>.<namespace>.example.com; callers name them in the Host
# header (no DNS for them here).
kubectl -n knative-serving patch configmap config-domain --type merge -p '{"data":{"example.com":""}}' >/dev/null
# Images from the local registry are pulled over plain HTTP: Knative must
# not try to resolve their tags to digests itself (it would use HTTPS).
kubectl -n knative-serving patch configmap config-deployment --type merge \
  -p '{"data":{"registries-skipping-tag-resolving":"kind.local,ko.local,dev.local,localhost:5000,127.0.0.1:5000"}}' >/dev/null
# queue-proxy serves its request metrics (in flight, counts, latencies) for
# Prometheus on :9091, as make e2e scrapes them; Knative's default is none.
kubectl -n knative-serving patch configmap config-observability --type merge \
  -p '{"data":{"request-metrics-protocol":"prometheus"}}' >/dev/null
# Revisions that no route references are deleted at once. Dapr's operator
# keeps one Service per app id (<app-id>-dapr, what service invocation
# resolves) and points its selector at whichever Deployment with that app id
# it reconciled last; every Knative revision is such a Deployment, so kept
# revisions at zero pods would leave invocation with no address (seen in
# make e2e: "lookup sous-dapr...: no such host" after four revisions).
kubectl -n knative-serving patch configmap config-gc --type merge -p '{"data":{
  "min-non-active-revisions":"0","max-non-active-revisions":"0",
  "retain-since-create-time":"disabled","retain-since-last-active-time":"disabled"}}' >/dev/null
shrink knative-serving

log "Traefik"
traefik_rbac=$(cd "$cluster/traefik" && go list -m -f '{{.Dir}}' github.com/traefik/traefik/v3)/integration/fixtures/knative/01-rbac.yml
apply "$traefik_rbac"
image "$m/traefik.yaml" "$reg/traefik:$(version traefik github.com/traefik/traefik/v3)" >"$STATE/manifests/traefik.yaml"
apply "$STATE/manifests/traefik.yaml"

log "Knative Eventing"
apply "$STATE/manifests/eventing-core.yaml" "$STATE/manifests/in-memory-channel.yaml" "$STATE/manifests/mt-channel-broker.yaml"
shrink knative-eventing

log "Dapr"
dv=$(version dapr github.com/dapr/dapr)
chart=$(cd "$cluster/dapr" && go list -m -f '{{.Dir}}' github.com/dapr/dapr)/charts/dapr
kubectl create namespace dapr-system --dry-run=client -o yaml | kubectl apply -f - >/dev/null
# In-memory scheduler storage: no storage provisioner on this node.
"$BIN/helm" template dapr "$chart" --namespace dapr-system --include-crds \
  --set global.registry=$reg/dapr --set global.tag="${dv#v}" --set global.ha.enabled=false \
  --set dapr_scheduler.cluster.inMemoryStorage=true --set dapr_scheduler.replicaCount=1 \
  >"$STATE/manifests/dapr.yaml"
# Dapr's chart asks for no resources, so nothing to shrink; and its
# scheduler runs an in-memory etcd of three members that a rolling restart
# of one member (as shrinking after the apply would cause) panics.
apply "$STATE/manifests/dapr.yaml"

for ns in kube-system redis knative-serving traefik knative-eventing dapr-system; do
  log "waiting for $ns"
  wait_ready "$ns"
done
