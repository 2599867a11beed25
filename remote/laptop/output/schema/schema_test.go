package schema

import (
	"strings"
	"testing"
)

const version = `{"version": 1, "kind": "tp.version",
  "client": {"version": "v1.2.3", "image": "r/tp:v1.2.3", "go": "go1.26", "os": "linux", "arch": "amd64"},
  "manager": {"version": "", "image": "", "namespace": "tp-system", "ready": false, "skew": "", "error": "no cluster"}%s}`

// The published schemas are open to fields added later; Strict is not, and both hold a
// document to the fields and values the shape promises.
func TestValidate(t *testing.T) {
	open, err := New(false)
	if err != nil {
		t.Fatal(err)
	}
	strict, err := New(true)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, doc          string
		openErr, strictErr string // "" passes
	}{
		{"a version", strings.Replace(version, "%s", "", 1), "", ""},
		{"as YAML", "version: 1\nkind: tp.list\nintercepts: []\nworkloads: []\n", "", ""},
		{"a field added later", strings.Replace(version, "%s", `, "extra": 1`, 1), "", "additional properties 'extra' not allowed"},
		{"a required field missing", `{"version": 1, "kind": "tp.list", "intercepts": []}`, "missing property 'workloads'", "missing property 'workloads'"},
		{"another version", `{"version": 2, "kind": "tp.list", "intercepts": [], "workloads": []}`, "value must be 1", "value must be 1"},
		{"a wrong type", `{"version": 1, "kind": "tp.status", "sessions": {}}`, "got object, want array", "got object, want array"},
		{"a bad date", `{"version": 1, "kind": "tp.status", "sessions": [{"name": "a", "pid": 1, "version": "v", "context": "c", "cluster": "u",
			"namespace": "n", "managerNamespace": "m", "listen": "l", "started": "yesterday", "goroutines": 1}]}`, "'yesterday' is not valid date-time", "'yesterday' is not valid date-time"},
		{"a filter's kind", `{"version": 1, "kind": "tp.intercept", "name": "w", "workload": {"namespace": "n", "kind": "Deployment", "name": "w"},
			"http": {"headers": [{"name": "x", "value": "y", "kind": "glob"}]}, "wiretap": false,
			"ports": [{"name": "w", "port": "http", "service": "w", "servicePort": 80, "local": "127.0.0.1:8080", "agents": 1}]}`, "value must be one of", "value must be one of"},
		{"a manifest", `{"apiVersion": "v1", "kind": "List", "items": [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "tp-system", "labels": {"a": "b"}}, "spec": {}}]}`, "", ""},
		{"an unknown kind", `{"version": 1, "kind": "tp.other"}`, `kind "tp.other": no schema`, `kind "tp.other": no schema`},
		{"not an object", `[1]`, "not one JSON object", "not one JSON object"},
	} {
		for _, v := range []struct {
			name string
			v    *Validator
			want string
		}{{"open", open, tt.openErr}, {"strict", strict, tt.strictErr}} {
			_, err := v.v.Validate([]byte(tt.doc))
			switch {
			case v.want == "" && err != nil:
				t.Errorf("%s, %s: %v", tt.name, v.name, err)
			case v.want != "" && (err == nil || !strings.Contains(err.Error(), v.want)):
				t.Errorf("%s, %s: %v; want an error with %q", tt.name, v.name, err, v.want)
			}
		}
	}
}

func TestKindsAndSources(t *testing.T) {
	want := []string{"List", "tp.intercept", "tp.list", "tp.status", "tp.version"}
	if got := Kinds(); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("Kinds() = %v, want %v", got, want)
	}
	if _, err := Source("tp.nothing"); err == nil || !strings.Contains(err.Error(), "have List, tp.intercept") {
		t.Errorf("Source of an unknown kind: %v", err)
	}
}
