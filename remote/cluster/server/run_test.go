package server

import (
	"os"
	"path/filepath"
	"testing"
)

// The manager takes its DNS server and the cluster domain from its pod's resolv.conf.
func TestReadResolvConf(t *testing.T) {
	path := filepath.Join(t.TempDir(), "resolv.conf")
	conf := "search tp-system.svc.example.org svc.example.org example.org\nnameserver 10.96.0.10\nnameserver 10.96.0.11\noptions ndots:5\n"
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if rc := readResolvConf(path); rc != (resolvConf{nameserver: "10.96.0.10", domain: "example.org"}) {
		t.Errorf("readResolvConf = %+v", rc)
	}
	if rc := readResolvConf(filepath.Join(t.TempDir(), "none")); rc != (resolvConf{domain: "cluster.local"}) {
		t.Errorf("without resolv.conf: %+v, want cluster.local and no nameserver", rc)
	}
}
