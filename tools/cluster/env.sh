# env.sh: the local cluster's fixed layout, sourced by up.sh, down.sh and
# images.sh. Everything the cluster writes lives under $STATE (git-ignored,
# removed by make cluster-down) or $RUN (sockets and pid files), except the
# paths the kubelet fixes (/var/lib/kubelet) and the host state listed in
# down.sh.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cluster=$root/tools/cluster
STATE=$root/.cache/cluster
RUN=/run/sous-cluster
BIN=$STATE/bin
LOGS=$STATE/logs
PKI=$STATE/pki
KUBECONFIG=$STATE/kubeconfig
export KUBECONFIG

# Networks, all inside this VM: the node's address is the gateway of the
# pod bridge, so nothing listens on or routes through eth0.
BRIDGE=sous0
NODE_IP=10.244.0.1
POD_CIDR=10.244.0.0/24
CLUSTER_CIDR=10.244.0.0/16
SERVICE_CIDR=10.96.0.0/16
API_SERVICE_IP=10.96.0.1
DNS_IP=10.96.0.10
NODE_NAME=sous-node

# Loopback ports on the host.
REGISTRY=127.0.0.1:5000
ETCD_PORT=2379
# Traefik's NodePort; kube-proxy serves NodePorts on loopback only.
INGRESS_PORT=31080

kubectl() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG" "$@"; }

log() { printf '%s cluster: %s\n' "$(date +%T)" "$*" >&2; }
die() { log "$*"; exit 1; }

# wait_for DESCRIPTION TIMEOUT_S COMMAND...: retry COMMAND each second until
# it succeeds; on timeout say what it last printed.
wait_for() {
  local what=$1 timeout=$2 out
  shift 2
  local deadline=$((SECONDS + timeout))
  until out=$("$@" 2>&1); do
    if ((SECONDS > deadline)); then
      die "$what: not after ${timeout}s; last: $(tail -c 600 <<<"$out")"
    fi
    sleep 1
  done
}

# start NAME COMMAND...: run a host process in the background, its output in
# $LOGS/NAME.log and its pid in $RUN/pids/NAME.
start() {
  local name=$1
  shift
  mkdir -p "$RUN/pids" "$LOGS"
  setsid "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/pids/$name"
}
