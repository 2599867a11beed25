package release

import (
	"fmt"
	"strings"

	"sigs.k8s.io/yaml"
)

// The krew plugin manifest, as krew's v1alpha2 Plugin declares it (the fields tp uses).
type (
	plugin struct {
		APIVersion string     `json:"apiVersion"`
		Kind       string     `json:"kind"`
		Metadata   metadata   `json:"metadata"`
		Spec       pluginSpec `json:"spec"`
	}
	metadata struct {
		Name string `json:"name"`
	}
	pluginSpec struct {
		Version          string           `json:"version"`
		Homepage         string           `json:"homepage"`
		ShortDescription string           `json:"shortDescription"`
		Description      string           `json:"description"`
		Platforms        []pluginPlatform `json:"platforms"`
	}
	pluginPlatform struct {
		Selector struct {
			MatchLabels map[string]string `json:"matchLabels"`
		} `json:"selector"`
		URI    string       `json:"uri"`
		SHA256 string       `json:"sha256"`
		Bin    string       `json:"bin"`
		Files  []pluginFile `json:"files"`
	}
	pluginFile struct {
		From string `json:"from"`
		To   string `json:"to"`
	}
)

// KrewAPIVersion is the krew manifest's apiVersion.
const KrewAPIVersion = "krew.googlecontainertools.github.com/v1alpha2"

const (
	homepage         = "https://github.com/tpdev/tp"
	shortDescription = "Attach your machine to a cluster's network, without root"
	description      = `tp attaches your machine to a Kubernetes cluster's network without root: cluster
names, ClusterIPs and pod IPs answer through a local SOCKS5 + HTTP proxy and DNS
server, "kubectl tp run -- CMD" attaches one program, and "kubectl tp intercept"
brings a workload's requests to a port on your machine. Once per cluster:
"kubectl tp install" (it deploys the image this release was built with).
`
)

// KrewManifest is the krew plugin manifest of the release: one platform per Platforms,
// each naming its archive at url/ARCHIVE with its SHA-256 from sums (hex).
func KrewManifest(version, url string, sums map[Platform]string) ([]byte, error) {
	p := plugin{APIVersion: KrewAPIVersion, Kind: "Plugin", Metadata: metadata{Name: "tp"}, Spec: pluginSpec{
		Version: PluginVersion(version), Homepage: homepage, ShortDescription: shortDescription, Description: description,
	}}
	for _, pl := range Platforms {
		sum, ok := sums[pl]
		if !ok || len(sum) != 64 {
			return nil, fmt.Errorf("release: no SHA-256 of the archive for %s", pl)
		}
		pp := pluginPlatform{URI: strings.TrimSuffix(url, "/") + "/" + pl.Archive(), SHA256: sum, Bin: pl.PluginBinary(),
			Files: []pluginFile{{From: pl.PluginBinary(), To: "."}}}
		pp.Selector.MatchLabels = map[string]string{"os": pl.OS, "arch": pl.Arch}
		p.Spec.Platforms = append(p.Spec.Platforms, pp)
	}
	out, err := yaml.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("release: krew manifest: %w", err)
	}
	head := "# tp's krew plugin manifest, written by `make dist`:\n" +
		"#   kubectl krew install --manifest=kubectl-tp.yaml [--archive=kubectl-tp_OS_ARCH.tar.gz]\n"
	return append([]byte(head), out...), nil
}
