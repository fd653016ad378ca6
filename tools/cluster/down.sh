#!/usr/bin/env bash
# down.sh: `make cluster-down`. Stops every process up.sh started (by the
# pids it wrote, never by name), the containers the kubelet ran (through
# containerd, before it stops), unmounts what they left, restores the host
# state the kubelet and kube-proxy changed, and removes the cluster's state.
# Built binaries and images (.cache/cluster/bin, the registry's storage
# is removed; images are rebuilt from the ko and podman caches) stay.
set -uo pipefail
source "$(dirname "$0")/env.sh"

stop_pid() { # stop_pid NAME: SIGTERM, then SIGKILL after 20 s
  local f=$RUN/pids/$1 pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
  fi
  rm -f "$f"
}

# The node first: stop the kubelet so that it restarts nothing, then every
# pod sandbox and container through containerd's CRI.
stop_pid kubelet
if [ -S "$RUN/containerd.sock" ]; then
  ctr=(ctr --address "$RUN/containerd.sock" -n k8s.io)
  for t in $("${ctr[@]}" tasks list -q 2>/dev/null); do "${ctr[@]}" tasks kill -s SIGKILL "$t" >/dev/null 2>&1; done
  sleep 1
  for t in $("${ctr[@]}" tasks list -q 2>/dev/null); do "${ctr[@]}" tasks delete -f "$t" >/dev/null 2>&1; done
  for c in $("${ctr[@]}" containers list -q 2>/dev/null); do "${ctr[@]}" containers delete "$c" >/dev/null 2>&1; done
fi
for name in kube-proxy kube-scheduler kube-controller-manager kube-apiserver etcd containerd registry; do
  stop_pid "$name"
done
# Shims of containers that outlived containerd.
for p in $(pgrep -f "containerd-shim-runc-v2 -namespace k8s.io -id .* -address $RUN/containerd.sock" 2>/dev/null); do
  kill -KILL "$p" 2>/dev/null
done

# Mounts under the kubelet's and containerd's folders and the pod netns.
for dir in /var/lib/kubelet "$STATE/containerd" "$RUN"; do
  awk -v d="$dir" '$2 ~ "^"d {print $2}' /proc/mounts | sort -r | while read -r mnt; do
    umount -l "$mnt" 2>/dev/null
  done
done
for ns in $(ip netns list 2>/dev/null | awk '/^cni-/ {print $1}'); do ip netns delete "$ns" 2>/dev/null; done

# Host state: sysctls as they were, kube-proxy's and our iptables chains,
# the pod bridge, the kubepods cgroups.
if [ -f "$STATE/host/sysctl" ]; then
  sort -u "$STATE/host/sysctl" | while IFS== read -r k v; do sysctl -qw "$k=$v" 2>/dev/null; done
fi
iptables -D FORWARD -j SOUS-CLUSTER 2>/dev/null; iptables -F SOUS-CLUSTER 2>/dev/null; iptables -X SOUS-CLUSTER 2>/dev/null
for table in filter nat mangle; do
  iptables -t "$table" -S 2>/dev/null | awk '/^-A .* -j KUBE-/ {print}' | sed 's/^-A/-D/' | while read -r rule; do
    eval iptables -t "$table" "$rule" 2>/dev/null
  done
  for chain in $(iptables -t "$table" -S 2>/dev/null | awk '/^-N KUBE-/ {print $2}'); do iptables -t "$table" -F "$chain" 2>/dev/null; done
  for chain in $(iptables -t "$table" -S 2>/dev/null | awk '/^-N KUBE-/ {print $2}'); do iptables -t "$table" -X "$chain" 2>/dev/null; done
done
ip link delete "$BRIDGE" 2>/dev/null
for c in /sys/fs/cgroup/*/kubepods; do
  [ -d "$c" ] && find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null
done
rm -rf /var/lib/kubelet /var/lib/cni/networks/sous "$RUN"
rm -rf "$STATE/etcd" "$STATE/pki" "$STATE/kubeconfigs" "$STATE/containerd" "$STATE/registry" "$STATE/host" \
  "$STATE/kubeconfig" "$STATE/ingress" "$STATE/manifests" "$STATE/src" "$STATE/images"
rm -f "$root/bin/kubectl"
log "stopped; cluster state removed (binaries kept in $BIN)"
