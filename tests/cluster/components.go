package cluster

import (
	"fmt"
	"strconv"
	"time"
)

// Daemon names, in start order; they also name the log files.
const (
	etcd              = "etcd"
	apiserver         = "kube-apiserver"
	controllerManager = "kube-controller-manager"
	scheduler         = "kube-scheduler"
	containerd        = "containerd"
	kubelet           = "kubelet"
	kubeProxy         = "kube-proxy"
	kubeRouter        = "kube-router"
)

// daemons describes every component with its flags and files.
func (c *Cluster) daemons() []daemon {
	pki := func(f string) string { return c.state("pki", f) }
	kcfg := func(n string) string { return c.state(n + ".kubeconfig") }
	sock := c.containerdSock()
	return []daemon{
		{name: etcd, path: "/usr/bin/etcd", stop: 10 * time.Second, args: []string{
			"--name=tp", "--data-dir=" + c.state("etcd"),
			"--listen-client-urls=http://" + etcdClient, "--advertise-client-urls=http://" + etcdClient,
			"--listen-peer-urls=http://" + etcdPeer, "--initial-advertise-peer-urls=http://" + etcdPeer,
			"--initial-cluster=tp=http://" + etcdPeer,
		}},
		{name: apiserver, path: c.bins.path("kube-apiserver"), stop: 60 * time.Second, args: []string{
			"--etcd-servers=http://" + etcdClient,
			"--bind-address=" + NodeIP, "--advertise-address=" + NodeIP, "--secure-port=" + strconv.Itoa(APIPort),
			"--service-cluster-ip-range=" + ServiceCIDR,
			"--tls-cert-file=" + pki("apiserver.crt"), "--tls-private-key-file=" + pki("apiserver.key"),
			"--client-ca-file=" + pki("ca.crt"),
			"--kubelet-client-certificate=" + pki("apiserver-kubelet-client.crt"),
			"--kubelet-client-key=" + pki("apiserver-kubelet-client.key"),
			"--kubelet-certificate-authority=" + pki("ca.crt"),
			// By IP: the node's name is in no resolver the machine may ask.
			"--kubelet-preferred-address-types=InternalIP",
			"--service-account-key-file=" + pki("sa.pub"), "--service-account-signing-key-file=" + pki("sa.key"),
			"--service-account-issuer=https://kubernetes.default.svc." + Domain,
			"--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
			"--allow-privileged=true",
		}},
		{name: controllerManager, path: c.bins.path("kube-controller-manager"), stop: 10 * time.Second, args: []string{
			"--kubeconfig=" + kcfg("controller-manager"),
			"--authentication-kubeconfig=" + kcfg("controller-manager"), "--authorization-kubeconfig=" + kcfg("controller-manager"),
			"--bind-address=127.0.0.1",
			"--service-account-private-key-file=" + pki("sa.key"), "--root-ca-file=" + pki("ca.crt"),
			"--cluster-signing-cert-file=" + pki("ca.crt"), "--cluster-signing-key-file=" + pki("ca.key"),
			"--use-service-account-credentials=true", "--controllers=*,-bootstrapsigner,-tokencleaner",
			"--allocate-node-cidrs=true", "--cluster-cidr=" + PodCIDR, "--node-cidr-mask-size=24",
			"--service-cluster-ip-range=" + ServiceCIDR, "--leader-elect=false",
		}},
		{name: scheduler, path: c.bins.path("kube-scheduler"), stop: 10 * time.Second, args: []string{
			"--kubeconfig=" + kcfg("scheduler"),
			"--authentication-kubeconfig=" + kcfg("scheduler"), "--authorization-kubeconfig=" + kcfg("scheduler"),
			"--bind-address=127.0.0.1", "--leader-elect=false",
		}},
		{name: containerd, path: "/usr/bin/containerd", stop: 10 * time.Second,
			args: []string{"--config=" + c.state("containerd.toml")},
			// No image may ever be pulled: every pull meets a dead loopback proxy and fails at
			// once, before a registry's name is even resolved. Images come from Load.
			env: []string{"HTTP_PROXY=http://127.0.0.1:9", "HTTPS_PROXY=http://127.0.0.1:9", "NO_PROXY="},
			files: map[string]string{
				"containerd.toml": c.containerdConfig(),
				"runc-wrapper":    runcWrapper,
			}},
		{name: kubelet, path: c.bins.path("kubelet"), stop: 20 * time.Second,
			args: []string{
				"--config=" + c.state("kubelet.yaml"), "--kubeconfig=" + kcfg("kubelet"),
				"--hostname-override=" + NodeName, "--node-ip=" + NodeIP, "--root-dir=" + c.state("kubelet"),
			},
			files: map[string]string{"kubelet.yaml": c.kubeletConfig(sock)}},
		{name: kubeProxy, path: c.bins.path("kube-proxy"), stop: 10 * time.Second, args: []string{
			"--kubeconfig=" + kcfg("proxy"), "--hostname-override=" + NodeName,
			"--cluster-cidr=" + PodCIDR, "--proxy-mode=iptables",
			"--healthz-bind-address=127.0.0.1:10256", "--metrics-bind-address=127.0.0.1:10249",
		}},
		// NetworkPolicies: kube-router's firewall only (no routing, no service proxy, no CNI).
		// It rejects what a policy denies, as real clusters' controllers mostly do.
		{name: kubeRouter, path: c.bins.kubeRouter, stop: 10 * time.Second, args: []string{
			"--kubeconfig=" + kcfg("admin"), "--hostname-override=" + NodeName,
			"--run-firewall=true", "--run-router=false", "--run-service-proxy=false", "--enable-cni=false",
			"--enable-pod-egress=false", "--service-cluster-ip-range=" + ServiceCIDR,
			"--health-port=" + strconv.Itoa(routerHealthPort), "--metrics-port=0",
		}},
	}
}

// routerHealthPort is kube-router's health check port, on every address of the node.
const routerHealthPort = 20244

func (c *Cluster) containerdSock() string { return c.state("containerd", "containerd.sock") }

func (c *Cluster) containerdConfig() string {
	return fmt.Sprintf(`version = 2
root = %q
state = %q
[grpc]
  address = %q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "/etc/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      BinaryName = %q
`, c.state("containerd", "root"), c.state("containerd", "state"), c.containerdSock(), PauseImage, c.state("runc-wrapper"))
}

// runcWrapper stands between containerd and runc. kubelet asks for oomScoreAdj -998 on every
// pod sandbox; without CAP_SYS_RESOURCE (these machines lack it) runc then fails with
// "can't get final child's PID from pipe: EOF". The wrapper lowers a negative value to 0.
const runcWrapper = `#!/bin/sh
prev=
for a in "$@"; do
  if [ "$prev" = "--bundle" ] && [ -f "$a/config.json" ]; then
    sed -i 's/"oomScoreAdj":-[0-9]*/"oomScoreAdj":0/' "$a/config.json"
  fi
  prev=$a
done
exec /usr/sbin/runc "$@"
`

func (c *Cluster) kubeletConfig(sock string) string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %s
healthzBindAddress: 127.0.0.1
readOnlyPort: 0
authentication:
  x509: {clientCAFile: %q}
  webhook: {enabled: true}
  anonymous: {enabled: false}
authorization: {mode: Webhook}
clusterDomain: %s
clusterDNS: [%s]
cgroupDriver: cgroupfs
failSwapOn: false
tlsCertFile: %q
tlsPrivateKeyFile: %q
containerRuntimeEndpoint: "unix://%s"
resolvConf: ""
evictionHard: {memory.available: "100Mi", nodefs.available: "1%%", imagefs.available: "1%%", nodefs.inodesFree: "1%%"}
imageGCHighThresholdPercent: 100
serializeImagePulls: false
`, NodeIP, c.state("pki", "ca.crt"), Domain, DNSIP, c.state("pki", "kubelet.crt"), c.state("pki", "kubelet.key"), sock)
}

// cniConfig is the pod network: one bridge, host-local addresses from the node's /24, and
// portmap for hostPort.
const cniConfig = `{"cniVersion": "0.4.0", "name": "` + cniNetwork + `", "plugins": [
  {"type": "bridge", "bridge": "` + CNIBridge + `", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "` + NodePodCIDR + `"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}
]}
`
