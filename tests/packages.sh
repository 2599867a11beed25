#!/usr/bin/env bash
# The Debian packages tp's test cluster, demo and tests need: installed when missing (as root
# on Debian or Ubuntu), else a message saying what to install. .ci/run and make demo call it.
set -euo pipefail
packages=(containerd runc containernetworking-plugins etcd-server
  iptables ipset conntrack iproute2 util-linux procps
  curl dnsutils git make gcc ca-certificates fish zsh nodejs)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ ! -r /etc/debian_version ] || ! command -v apt-get >/dev/null; then
  echo "tp: this is not Debian or Ubuntu: install the equivalents of: ${missing[*]} (see README: Prerequisites)" >&2
  exit 1
fi
if [ "$(id -u)" != 0 ]; then
  echo "tp: missing packages: ${missing[*]}; run as root (the local test cluster needs it anyway), or: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
echo "tp: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
