#!/usr/bin/env bash
# knative-config.sh OUT: lay out Knative's own config/ trees for ko, from
# the module zips that tools/cluster/knative pins, into OUT/<set>. The zips
# drop symlinks; the files they linked are copied back from the modules they
# point into (knative.dev/networking and knative.dev/caching, at the
# versions serving requires). Nothing else is changed here; the patches
# this machine needs are in addons.sh.
set -euo pipefail
source "$(dirname "$0")/env.sh"
out=$1
# go mod download, not go list -m: on a machine whose module cache does not
# hold a module yet, go list -m prints no Dir.
dir() {
  local d
  d=$(cd "$cluster/knative" && go mod download -json "$1" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  [ -d "$d" ] || { echo "knative-config: no module directory for $1" >&2; exit 1; }
  echo "$d"
}
serving=$(dir knative.dev/serving)
eventing=$(dir knative.dev/eventing)
networking=$(dir knative.dev/networking)
caching=$(dir knative.dev/caching)

rm -rf "$out" && mkdir -p "$out"
copy() { # copy SRC DST: a tree of YAML files, writable
  mkdir -p "$2"
  (cd "$1" && find . -name '*.yaml' -print0 | xargs -0 -I{} cp --parents {} "$2/")
  chmod -R u+w "$2"
}

copy "$serving/config/core" "$out/serving-core"
# Symlinks in knative/serving's config/core.
cp "$caching/config/image.yaml" "$out/serving-core/300-imagecache.yaml"
for f in certificate domain-claim ingress serverlessservice; do
  cp "$networking/config/$f.yaml" "$out/serving-core/300-resources/$f.yaml"
done
cp "$networking/config/config-network.yaml" "$out/serving-core/configmaps/network.yaml"
# The HPA objects scale the activator and webhook on CPU, which this
# cluster (no metrics-server) cannot measure: release YAMLs ship them in
# serving-core too, but they only log errors here.
rm -f "$out/serving-core/deployments/"*-hpa.yaml

copy "$eventing/config/core" "$out/eventing-core"
# Symlinks in knative/eventing's config/core: the image lists of the
# integrations and transformations (the controller mounts both ConfigMaps;
# the images they name are only pulled by those optional sources/sinks).
cp "$eventing/third_party/eventing-integrations-latest/"*.yaml "$out/eventing-core/configmaps/"
rm -f "$out/eventing-core/deployments/"*-hpa.yaml
copy "$eventing/config/channels/in-memory-channel" "$out/in-memory-channel"
copy "$eventing/config/brokers/mt-channel-broker" "$out/mt-channel-broker"
# The broker's HPA scales on CPU, which this cluster cannot measure. (Its
# "200-ingress-roles.yaml~..." entries in the zip are dropped symlinks whose
# targets, roles/ingress-role*.yaml, are copied anyway.)
rm -f "$out/mt-channel-broker/deployments/hpa.yaml"
chmod -R u+w "$out"

copy "$cluster/hello" "$out/hello"
