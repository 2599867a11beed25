#!/usr/bin/env bash
# tp's main job, shown end to end (make demo). With no KUBECONFIG it brings up the local
# test cluster (root needed for that only) and plays the laptop in its laptop network
# namespace, which reaches the API server and nothing else, as an unprivileged user. With
# KUBECONFIG pointing at a cluster, it uses that cluster and this machine as the laptop;
# the images must then be available to the cluster (see README: "Using tp with any cluster").
set -euo pipefail
cd "$(dirname "$0")/../.."
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

TP=$PWD/bin/tp
if [ -z "${KUBECONFIG:-}" ]; then
  say "no KUBECONFIG: starting the local test cluster (make cluster-up)"
  make -s cluster-up
  export KUBECONFIG=$PWD/.cluster/kubeconfig
  kubectl() { bin/tpcluster kubectl -- "$@"; }
  # The laptop: its own user and home, in the namespace that reaches only the API server.
  home=$(mktemp -d /tmp/tp-demo-XXXX)
  cp "$KUBECONFIG" "$home/kubeconfig"; cp "$TP" "$home/tp"; chown -R 65534:65534 "$home"; chmod 755 "$home"
  laptop() { nsenter --net=/run/netns/tplaptop -- setpriv --reuid=65534 --regid=65534 --clear-groups -- \
    env -i HOME="$home" KUBECONFIG="$home/kubeconfig" PATH=/usr/bin:/bin "$@"; }
  TPL=$home/tp
else
  laptop() { "$@"; }
  TPL=$TP
fi

say "tp install: the traffic manager"
laptop "$TPL" install

say "a demo service: web-app in namespace tp-demo"
kubectl apply -f tests/demo/web-app.yaml
kubectl -n tp-demo rollout status deploy/web-app --timeout=120s

say "tp connect --namespace tp-demo (no root; prints the variables to export)"
laptop "$TPL" connect --namespace tp-demo --dns-listen 127.0.0.1:1053

say "curl by short name through SOCKS5 (socks5h: the name is resolved in the cluster)"
# A new Service answers once kube-proxy has programmed it: give it a few seconds.
for i in $(seq 20); do laptop curl -sf --max-time 5 -o /dev/null -x socks5h://127.0.0.1:1080 http://web-app/ 2>/dev/null && break; sleep 0.5; done
laptop curl -sS --max-time 10 -x socks5h://127.0.0.1:1080 http://web-app/hello
say "curl by name.namespace through the HTTP proxy (same port)"
laptop curl -sS --max-time 10 -x http://127.0.0.1:1080 http://web-app.tp-demo/hello
say "the cluster's DNS on 127.0.0.1:1053"
laptop dig +short @127.0.0.1 -p 1053 web-app.tp-demo || true
say "a name the cluster does not have"
laptop curl -sS --max-time 10 -x http://127.0.0.1:1080 http://web-ap/ || true

say "tp status"
laptop "$TPL" status
echo
echo "The connection stays up in the background; tp quit ends it."
if [ -n "${home:-}" ]; then
  echo "Here, as the laptop user: nsenter --net=/run/netns/tplaptop setpriv --reuid=65534 --regid=65534 --clear-groups env HOME=$home $TPL quit"
fi
