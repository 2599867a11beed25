package client

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/tpdev/tp/deploy"
	"github.com/tpdev/tp/remote/laptop/output"
)

// tp install --dry-run prints the manifest as YAML documents (text and -o yaml alike), or
// with -o json as one List of the same objects, in the same order.
func TestInstallDryRunOutput(t *testing.T) {
	opts := deploy.Options{Image: "r.example/tp/tp:v0.5.0"}
	want, err := deploy.Render(opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"", "text", "yaml"} {
		var out bytes.Buffer
		if err := New(KubeFlags{}, &out, &out).Install(t.Context(), InstallConfig{Options: opts, DryRun: true, Output: f}); err != nil || out.String() != string(want) {
			t.Errorf("tp install --dry-run -o %q: %v, not the manifest", f, err)
		}
	}
	var out bytes.Buffer
	if err := New(KubeFlags{}, &out, &out).Install(t.Context(), InstallConfig{Options: opts, DryRun: true, Output: "json"}); err != nil {
		t.Fatal(err)
	}
	var list output.ManifestList
	if err := json.Unmarshal(out.Bytes(), &list); err != nil || list.APIVersion != "v1" || list.Kind != "List" {
		t.Fatalf("tp install --dry-run -o json: %v\n%.300s", err, out.String())
	}
	objs, err := deploy.Objects(want)
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != len(objs) || len(objs) == 0 {
		t.Fatalf("the List has %d items, the manifest %d objects", len(list.Items), len(objs))
	}
	for i, o := range objs {
		a, _ := json.Marshal(o.Object)
		b, _ := json.Marshal(list.Items[i])
		if string(a) != string(b) {
			t.Errorf("item %d: %s\nwant %s", i, b, a)
		}
	}
	// The List reads back as the same objects, as kubectl apply -f would read it.
	back, err := deploy.Objects(out.Bytes())
	if err != nil || len(back) != 1 || back[0].GetKind() != "List" {
		t.Errorf("the List as a manifest: %v %d", err, len(back))
	}

	for _, cfg := range []InstallConfig{{Options: opts, DryRun: true, Output: "xml"}, {Options: opts, Output: "json"}} {
		err := New(KubeFlags{}, &out, &out).Install(t.Context(), cfg)
		if err == nil || exitCode(err) != 2 || !strings.HasPrefix(err.Error(), "-o ") {
			t.Errorf("tp install %+v: %v, want a usage error about -o", cfg, err)
		}
	}
}
