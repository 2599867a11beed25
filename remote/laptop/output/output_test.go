package output

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	httproute "github.com/tpdev/tp/intercept/route"
	"github.com/tpdev/tp/localproxy"
	"github.com/tpdev/tp/localproxy/dnsshim"
	"github.com/tpdev/tp/remote"
	"github.com/tpdev/tp/remote/laptop/control"
	"github.com/tpdev/tp/remote/laptop/output/schema"
	"github.com/tpdev/tp/remote/laptop/session"
)

func TestParse(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want Format
		err  string
	}{
		{"", Text, ""},
		{"text", Text, ""},
		{"json", JSON, ""},
		{"yaml", YAML, ""},
		{"xml", "", `-o "xml": want text, json or yaml`},
		{"JSON", "", `-o "JSON": want text, json or yaml`},
		{"yml", "", `-o "yml": want text, json or yaml`},
		{" json", "", `-o " json": want text, json or yaml`},
	} {
		got, err := Parse(tt.in)
		switch {
		case tt.err == "" && (err != nil || got != tt.want):
			t.Errorf("Parse(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		case tt.err != "" && (err == nil || err.Error() != tt.err):
			t.Errorf("Parse(%q): error %v, want %q", tt.in, err, tt.err)
		case tt.err != "" && remote.KindOf(err) != remote.Usage:
			t.Errorf("Parse(%q): %v is not a usage error (exit 2)", tt.in, err)
		}
	}
	if Text.Structured() || !JSON.Structured() || !YAML.Structured() {
		t.Error("Structured: only json and yaml are")
	}
}

func TestWriteTextIsTheCommands(t *testing.T) {
	if err := Write(&bytes.Buffer{}, Text, 1); err == nil {
		t.Error("Write of text printed something")
	}
}

// shapes are one of each shape, every field set.
func shapes() []any {
	since := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	filter := &httproute.Filter{Headers: []httproute.Match{{Name: "x-dev", Value: "alice.*", Kind: httproute.Regex}}, Path: &httproute.Match{Value: "/api/", Kind: httproute.Prefix}, ID: "alice-1a2b"}
	return []any{
		&Status{Header: NewHeader(KindStatus), Sessions: []control.Info{{Name: "default", PID: 42, Version: "v0.5.0", Context: "kind", Cluster: "https://127.0.0.1:6443",
			Namespace: "ns", ManagerNamespace: "tp-system", Listen: "127.0.0.1:1080", DNSListen: "127.0.0.1:1053", ProxyAuth: true, Started: since,
			LogPath: "/home/a/.cache/tp/sessions/default/daemon.log", Goroutines: 9,
			Session: mustJSON(session.Status{State: session.Connected, ManagerVersion: "v0.5.0", ManagerPod: "tp-manager-1", ClusterDomain: "cluster.local",
				ServiceCIDRs: []string{"10.96.0.0/12"}, PodCIDRs: []string{"10.244.0.0/16"}, AllowedCIDRs: []string{"192.168.5.0/24"}, Since: since,
				Reconnects: 1, LastError: "e", LastErrorAt: since, History: []session.Transition{{State: session.Connecting, At: since}},
				Lanes: []session.LaneStatus{{State: "up"}}, OpenFlows: 1, TotalFlows: 2, FailedFlows: 3, BytesIn: 4, BytesOut: 5,
				Intercepts: []session.InterceptSpec{{Name: "web", Namespace: "ns", Kind: "Deployment"}}}),
			Proxy: mustJSON(localproxy.Stats{Open: 1, Total: 2}), DNS: mustJSON(dnsshim.Stats{Queries: 3}),
			Upstream:  &control.Upstream{HTTP: "http://proxy:3128", HTTPS: "http://proxy:8080", All: "socks5h://proxy:1080", NoProxy: ".corp", Source: "HTTPS_PROXY"},
			AlsoProxy: []string{"192.168.5.0/24"}, NoProxy: ".corp"}}},
		&List{Header: NewHeader(KindList),
			Intercepts: []ListedIntercept{{Name: "web-http", Namespace: "ns", Kind: "Deployment", Workload: "web", Port: "http", HTTP: filter, Wiretap: true,
				Holder: "alice", Client: "laptop", Since: since, Agents: 2, Problem: "p"}},
			Workloads: []Workload{{Namespace: "ns", Kind: "Deployment", Name: "web", Intercepted: true}}},
		&Version{Header: NewHeader(KindVersion),
			Client:  ClientVersion{Version: "v0.5.0", Image: "r/tp/tp:v0.5.0", Go: "go1.26", OS: "linux", Arch: "amd64"},
			Manager: ManagerVersion{Version: "v0.3.1", Image: "r/tp/tp:v0.3.1", Namespace: "tp-system", Ready: true, Skew: "s", Note: "n", Error: "e"}},
		&Intercept{Header: NewHeader(KindIntercept), Name: "web", Workload: WorkloadRef{Namespace: "ns", Kind: "Deployment", Name: "web"}, HTTP: filter, Wiretap: true,
			Ports: []InterceptPort{{Name: "web-http", Port: "http", Service: "web", ServicePort: 80, Local: "127.0.0.1:8080", Agents: 1, Note: "overlaps"}}},
	}
}

// Every shape reads back from its JSON and its YAML as it was, field by field, and both
// start with "version" and "kind".
func TestShapesRoundTrip(t *testing.T) {
	kinds := map[string]bool{}
	for _, v := range shapes() {
		for _, f := range []Format{JSON, YAML} {
			var out bytes.Buffer
			if err := Write(&out, f, v); err != nil {
				t.Fatalf("%T as %s: %v", v, f, err)
			}
			if !strings.HasSuffix(out.String(), "\n") {
				t.Errorf("%T as %s does not end its line", v, f)
			}
			back := reflect.New(reflect.TypeOf(v).Elem()).Interface()
			var generic map[string]any
			var err error
			if f == JSON {
				err = json.Unmarshal(out.Bytes(), back)
				_ = json.Unmarshal(out.Bytes(), &generic)
				if !strings.Contains(out.String(), "\n  \"") {
					t.Errorf("%T's JSON is not indented:\n%s", v, out.String())
				}
			} else {
				err = yaml.UnmarshalStrict(out.Bytes(), back)
				_ = yaml.Unmarshal(out.Bytes(), &generic)
			}
			if err != nil {
				t.Fatalf("%T's %s does not read back: %v\n%s", v, f, err, out.String())
			}
			compareFields(t, string(f), reflect.ValueOf(v).Elem(), reflect.ValueOf(back).Elem(), reflect.TypeOf(v).Elem().Name())
			if generic["version"] != float64(1) || generic["kind"] == "" || generic["kind"] == nil {
				t.Errorf("%T's %s lacks version 1 or its kind: %v", v, f, generic)
			}
			kinds[generic["kind"].(string)] = true
		}
	}
	for _, k := range []string{KindStatus, KindList, KindVersion, KindIntercept} {
		if !kinds[k] || !strings.HasPrefix(k, "tp.") {
			t.Errorf("kind %q: no shape prints it", k)
		}
	}
}

// compareFields walks two values of one struct type and names every field that differs.
func compareFields(t *testing.T, format string, want, got reflect.Value, path string) {
	t.Helper()
	switch want.Kind() {
	case reflect.Struct:
		if tm, ok := want.Interface().(time.Time); ok {
			if !tm.Equal(got.Interface().(time.Time)) {
				t.Errorf("%s %s: %v, want %v", format, path, got.Interface(), tm)
			}
			return
		}
		for i := range want.NumField() {
			compareFields(t, format, want.Field(i), got.Field(i), path+"."+want.Type().Field(i).Name)
		}
	case reflect.Slice:
		if raw, ok := want.Interface().(json.RawMessage); ok {
			if !jsonEqual(raw, got.Interface().(json.RawMessage)) {
				t.Errorf("%s %s: %s, want %s", format, path, got.Interface(), raw)
			}
			return
		}
		if want.Len() != got.Len() {
			t.Errorf("%s %s: %d items, want %d", format, path, got.Len(), want.Len())
			return
		}
		for i := range want.Len() {
			compareFields(t, format, want.Index(i), got.Index(i), path+"["+string(rune('0'+i))+"]")
		}
	case reflect.Pointer:
		if want.IsNil() != got.IsNil() {
			t.Errorf("%s %s: nil %v, want nil %v", format, path, got.IsNil(), want.IsNil())
			return
		}
		if !want.IsNil() {
			compareFields(t, format, want.Elem(), got.Elem(), path)
		}
	default:
		if !reflect.DeepEqual(want.Interface(), got.Interface()) {
			t.Errorf("%s %s: %v, want %v", format, path, got.Interface(), want.Interface())
		}
	}
}

func jsonEqual(a, b []byte) bool {
	if len(a) == 0 || len(b) == 0 {
		return len(a) == len(b)
	}
	var x, y any
	return json.Unmarshal(a, &x) == nil && json.Unmarshal(b, &y) == nil && reflect.DeepEqual(x, y)
}

// The JSON field names are the contract: a rename breaks scripts.
func TestVersionShapeFieldNames(t *testing.T) {
	var out bytes.Buffer
	if err := Write(&out, JSON, shapes()[2]); err != nil {
		t.Fatal(err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(out.Bytes(), &top); err != nil {
		t.Fatal(err)
	}
	got := map[string]map[string]any{}
	for _, part := range []string{"client", "manager"} {
		var m map[string]any
		_ = json.Unmarshal(top[part], &m)
		got[part] = m
	}
	for part, fields := range map[string][]string{
		"client":  {"version", "image", "go", "os", "arch"},
		"manager": {"version", "image", "namespace", "ready", "skew", "error"},
	} {
		for _, f := range fields {
			if _, ok := got[part][f]; !ok {
				t.Errorf("tp version -o json: %s has no %q: %s", part, f, top[part])
			}
		}
	}
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// Every shape, JSON and YAML, matches its published schema with every object closed: a
// field added to a shape must be documented in its schema file, and a field the schema
// requires must be printed.
func TestShapesMatchTheirSchemas(t *testing.T) {
	strict, err := schema.New(true)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]bool{}
	for _, v := range shapes() {
		unset(t, reflect.ValueOf(v).Elem(), reflect.TypeOf(v).Elem().Name())
		for _, f := range []Format{JSON, YAML} {
			var out bytes.Buffer
			if err := Write(&out, f, v); err != nil {
				t.Fatal(err)
			}
			kind, err := strict.Validate(out.Bytes())
			if err != nil {
				t.Errorf("%T as %s: %v\n%s", v, f, err, out.String())
			}
			kinds[kind] = true
		}
	}
	for _, k := range schema.Kinds() {
		if !kinds[k] && k != schema.ManifestKind {
			t.Errorf("schema of %s: no shape of that kind", k)
		}
	}
	for k := range kinds {
		if _, err := schema.Source(k); err != nil {
			t.Errorf("shape of kind %s: %v", k, err)
		}
	}
}

// alwaysZero are fields that are empty by design where the examples have them.
var alwaysZero = map[string]bool{
	"List.Intercepts.HTTP.Path.Name": true, // a path's match has no header name
	"Intercept.HTTP.Path.Name":       true,
}

// unset names the fields an example leaves zero: the schema test proves nothing of them.
func unset(t *testing.T, v reflect.Value, path string) {
	t.Helper()
	switch v.Kind() {
	case reflect.Struct:
		if _, ok := v.Interface().(time.Time); ok {
			break
		}
		for i := range v.NumField() {
			f := v.Type().Field(i)
			if f.Anonymous {
				continue
			}
			if v.Field(i).IsZero() && !alwaysZero[path+"."+f.Name] {
				t.Errorf("example %s.%s is not set: set it, so its schema is checked", path, f.Name)
				continue
			}
			unset(t, v.Field(i), path+"."+f.Name)
		}
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Struct {
			for i := range v.Len() {
				unset(t, v.Index(i), path)
			}
		}
	case reflect.Pointer:
		if !v.IsNil() {
			unset(t, v.Elem(), path)
		}
	}
}
