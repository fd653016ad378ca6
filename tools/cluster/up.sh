#!/usr/bin/env bash
# up.sh: `make cluster`. Brings up a single-node Kubernetes on this machine
# from parts built here (build.sh, images.sh): a local registry, etcd, the
# control plane, containerd + kubelet + kube-proxy, CoreDNS, Knative Serving
# with Traefik, Knative Eventing (in-memory channel, channel-based broker),
# the Dapr control plane and a Redis. Prints each phase's time, the
# kubeconfig and the loopback address where Traefik serves Knative routes.
set -euo pipefail
source "$(dirname "$0")/env.sh"

declare -a phases=()
phase() { # phase NAME FUNCTION
  local t=$SECONDS
  log "== $1"
  "$2"
  phases+=("$(printf '%-28s %4ds' "$1" $((SECONDS - t)))")
}

host_packages() {
  local need=()
  command -v containerd >/dev/null || need+=(containerd)
  command -v runc >/dev/null || need+=(runc)
  command -v conntrack >/dev/null || need+=(conntrack)
  command -v iptables >/dev/null || need+=(iptables)
  [ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
  command -v podman >/dev/null || need+=(podman)
  command -v gcc >/dev/null || need+=(gcc libc6-dev)
  if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]} from Debian"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

binaries() { "$cluster/build.sh"; }

registry() {
  mkdir -p "$STATE/registry"
  cat >"$STATE/registry.yml" <<EOF
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $STATE/registry}
  delete: {enabled: true}
http:
  addr: $REGISTRY
EOF
  start registry "$BIN/registry" serve "$STATE/registry.yml"
  wait_for "registry on $REGISTRY" 30 curl -sf "http://$REGISTRY/v2/"
}

images() { "$cluster/images.sh"; }

network() {
  mkdir -p "$STATE/host"
  # Host state the kubelet and kube-proxy change, restored by down.sh.
  for s in vm.overcommit_memory kernel.panic kernel.panic_on_oops net.ipv4.conf.all.route_localnet; do
    echo "$s=$(sysctl -n "$s")" >>"$STATE/host/sysctl"
  done
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
  fi
  ip addr replace "$NODE_IP/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  # The pod and service networks stay inside this VM: nothing from them is
  # forwarded out of any other interface (no route, no NAT to the outside).
  iptables -N SOUS-CLUSTER 2>/dev/null || iptables -F SOUS-CLUSTER
  iptables -A SOUS-CLUSTER -s "$CLUSTER_CIDR" ! -o "$BRIDGE" -j DROP
  iptables -A SOUS-CLUSTER -d "$CLUSTER_CIDR" ! -i "$BRIDGE" -j DROP
  iptables -C FORWARD -j SOUS-CLUSTER 2>/dev/null || iptables -I FORWARD 1 -j SOUS-CLUSTER
  mkdir -p "$STATE/cni/net.d"
  cat >"$STATE/cni/net.d/10-sous.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "sous",
  "plugins": [
    {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP"}]],
              "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "loopback"}
  ]
}
EOF
}

pki() {
  mkdir -p "$PKI" "$STATE/kubeconfigs"
  cat >"$STATE/kubeadm.yaml" <<EOF
apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
localAPIEndpoint: {advertiseAddress: $NODE_IP, bindPort: 6443}
nodeRegistration: {name: $NODE_NAME, criSocket: "unix://$RUN/containerd.sock"}
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: $("$BIN/kubectl" version --client -o json | sed -n 's/.*"gitVersion": "\(v[^"]*\)".*/\1/p' | head -1)
clusterName: sous
controlPlaneEndpoint: $NODE_IP:6443
certificatesDir: $PKI
networking: {serviceSubnet: $SERVICE_CIDR, podSubnet: $CLUSTER_CIDR, dnsDomain: cluster.local}
apiServer:
  certSANs: [127.0.0.1, $NODE_IP, $API_SERVICE_IP, localhost]
EOF
  "$BIN/kubeadm" init phase certs all --config "$STATE/kubeadm.yaml" >"$LOGS/kubeadm.log" 2>&1
  "$BIN/kubeadm" init phase kubeconfig all --config "$STATE/kubeadm.yaml" --kubeconfig-dir "$STATE/kubeconfigs" >>"$LOGS/kubeadm.log" 2>&1
  # super-admin.conf (system:masters): admin.conf's group is bound to
  # cluster-admin by kubeadm's later phases, which this cluster skips.
  cp "$STATE/kubeconfigs/super-admin.conf" "$KUBECONFIG"
  mkdir -p "$root/bin" && ln -sf "$BIN/kubectl" "$root/bin/kubectl"
}

control_plane() {
  start etcd "$BIN/etcd" --name sous --data-dir "$STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster sous=http://127.0.0.1:2380 --listen-metrics-urls http://127.0.0.1:2381 \
    --log-level warn
  wait_for etcd 30 curl -sf http://127.0.0.1:2381/health

  start kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address "$NODE_IP" --advertise-address "$NODE_IP" --secure-port 6443 \
    --service-cluster-ip-range "$SERVICE_CIDR" --allow-privileged=true \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
    --client-ca-file "$PKI/ca.crt" --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types InternalIP \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --requestheader-client-ca-file "$PKI/front-proxy-ca.crt" --requestheader-allowed-names front-proxy-client \
    --requestheader-extra-headers-prefix X-Remote-Extra- --requestheader-group-headers X-Remote-Group \
    --requestheader-username-headers X-Remote-User \
    --proxy-client-cert-file "$PKI/front-proxy-client.crt" --proxy-client-key-file "$PKI/front-proxy-client.key"
  wait_for kube-apiserver 120 kubectl get --raw /readyz
  # What kubeadm's later phases would bind: the API server's client
  # certificate may use the kubelet API (logs, exec, port-forward).
  kubectl create clusterrolebinding kube-apiserver-kubelet-api --clusterrole system:kubelet-api-admin \
    --user kube-apiserver-kubelet-client --dry-run=client -o yaml | kubectl apply -f - >/dev/null

  local kc=$STATE/kubeconfigs
  start kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig "$kc/controller-manager.conf" --authentication-kubeconfig "$kc/controller-manager.conf" \
    --authorization-kubeconfig "$kc/controller-manager.conf" --bind-address 127.0.0.1 --leader-elect=false \
    --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" --root-ca-file "$PKI/ca.crt" \
    --service-account-private-key-file "$PKI/sa.key" --use-service-account-credentials \
    --controllers '*,bootstrapsigner,tokencleaner' --service-cluster-ip-range "$SERVICE_CIDR" \
    --cluster-cidr "$CLUSTER_CIDR" --allocate-node-cidrs=false
  start kube-scheduler "$BIN/kube-scheduler" \
    --kubeconfig "$kc/scheduler.conf" --authentication-kubeconfig "$kc/scheduler.conf" \
    --authorization-kubeconfig "$kc/scheduler.conf" --bind-address 127.0.0.1 --leader-elect=false
}

node() {
  mkdir -p "$RUN/containerd" "$STATE/containerd/certs.d/localhost:5000" "$STATE/containerd/certs.d/$REGISTRY"
  for h in localhost:5000 "$REGISTRY"; do
    printf 'server = "http://%s"\n[host."http://%s"]\n  capabilities = ["pull", "resolve"]\n' "$h" "$h" \
      >"$STATE/containerd/certs.d/$h/hosts.toml"
  done
  cat >"$STATE/containerd/config.toml" <<EOF
version = 2
root = "$STATE/containerd/root"
state = "$RUN/containerd/state"
[grpc]
  address = "$RUN/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost:5000/pause:3.10"
  # The pause container's oom_score_adj -998 needs CAP_SYS_RESOURCE, which
  # root lacks in this VM: without this every sandbox fails to start.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$STATE/containerd/certs.d"
EOF
  start containerd containerd --config "$STATE/containerd/config.toml"
  wait_for containerd 30 test -S "$RUN/containerd.sock"

  printf 'nameserver %s\nsearch cluster.local\n' "$DNS_IP" >"$STATE/resolv.conf"
  # The host's own resolver is not for pods: CoreDNS answers them, and has
  # nothing to forward to (no resolver outside the cluster is reachable).
  : >"$STATE/resolv-upstream.conf"
  cat >"$STATE/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
# cgroup v1 with an empty v2 hierarchy ("hybrid"), and no systemd.
cgroupDriver: cgroupfs
cgroupsPerQOS: true
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$RUN/containerd.sock
imageServiceEndpoint: unix://$RUN/containerd.sock
clusterDNS: [$DNS_IP]
clusterDomain: cluster.local
resolvConf: $STATE/resolv-upstream.conf
serializeImagePulls: false
# A development node: evict only when truly short.
evictionHard: {memory.available: 200Mi, nodefs.available: 2%, imagefs.available: 2%}
imageGCHighThresholdPercent: 98
imageGCLowThresholdPercent: 95
EOF
  start kubelet "$BIN/kubelet" --config "$STATE/kubelet.yaml" --kubeconfig "$STATE/kubeconfigs/kubelet.conf" \
    --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --root-dir /var/lib/kubelet
  cat >"$STATE/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clusterCIDR: $CLUSTER_CIDR
hostnameOverride: $NODE_NAME
clientConnection: {kubeconfig: $KUBECONFIG}
bindAddress: 127.0.0.1
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
# NodePorts on loopback only: the host reaches Traefik at 127.0.0.1.
nodePortAddresses: [127.0.0.0/8]
iptables: {localhostNodePorts: true}
conntrack: {maxPerCore: 0}
EOF
  start kube-proxy "$BIN/kube-proxy" --config "$STATE/kube-proxy.yaml"
  wait_for "node $NODE_NAME Ready" 180 kubectl wait --for=condition=Ready "node/$NODE_NAME" --timeout=5s
}

addons() {
  "$cluster/addons.sh"
}

# up.sh PHASE...: run only those phases (functions above), for working on
# one part of the cluster; plain up.sh runs them all, once.
if [ $# -gt 0 ]; then
  for p in "$@"; do phase "$p" "$p"; done
  printf '  %s\n' "${phases[@]}"
  exit 0
fi

if [ -d "$RUN/pids" ]; then
  for f in "$RUN/pids"/*; do
    [ -f "$f" ] || continue
    if kill -0 "$(cat "$f")" 2>/dev/null; then
      # The ingress file is written last: without it an earlier start
      # stopped part way, and what it left running is no cluster.
      [ -f "$STATE/ingress" ] ||
        die "an earlier make cluster stopped part way (processes in $RUN/pids, no $STATE/ingress): run make cluster-down, then make cluster"
      log "a cluster is running (pid files in $RUN/pids); nothing changed. make cluster-down stops it."
      exit 0
    fi
  done
  die "a cluster was left half-stopped ($RUN/pids has pid files of dead processes): run make cluster-down first"
fi

phase "host packages" host_packages
phase "binaries (build.sh)" binaries
phase "registry" registry
phase "images (images.sh)" images
phase "network" network
phase "certificates" pki
phase "control plane" control_plane
phase "node" node
phase "addons (addons.sh)" addons

echo "127.0.0.1:$INGRESS_PORT" >"$STATE/ingress"
echo
echo "cluster phases:"
printf '  %s\n' "${phases[@]}"
echo "kubeconfig:  $KUBECONFIG   (bin/kubectl --kubeconfig $KUBECONFIG get pods -A)"
echo "ingress:     $(cat "$STATE/ingress")   (Traefik; Host header = the Knative route's host)"
echo "node memory: $(free -m | awk '/^Mem:/ {print $3 " MiB used of " $2}')"
