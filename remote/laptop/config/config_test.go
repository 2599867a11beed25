package config

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/tpdev/tp/remote"
)

func write(t *testing.T, path, src string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestFindProjectSearchesUpwardAsGitDoes(t *testing.T) {
	root := t.TempDir()
	deep := filepath.Join(root, "repo", "a", "b")
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	if got := FindProject(deep); got != "" {
		t.Errorf("no tp.yaml anywhere: found %q", got)
	}
	above := write(t, filepath.Join(root, ProjectFile), "version: 1\n")
	if got := FindProject(deep); got != above {
		t.Errorf("tp.yaml above, no .git: found %q, want %q", got, above)
	}
	// A folder holding .git ends the search: a tp.yaml above the repository is not its own.
	if err := os.Mkdir(filepath.Join(root, "repo", ".git"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got := FindProject(deep); got != "" {
		t.Errorf("tp.yaml above the repository's root: found %q, want none", got)
	}
	inRepo := write(t, filepath.Join(root, "repo", ProjectFile), "version: 1\n")
	if got := FindProject(deep); got != inRepo {
		t.Errorf("tp.yaml at the repository's root: found %q, want %q", got, inRepo)
	}
	nearer := write(t, filepath.Join(root, "repo", "a", ProjectFile), "version: 1\n")
	if got := FindProject(deep); got != nearer {
		t.Errorf("found %q, want the nearest, %q", got, nearer)
	}
}

func TestLoadErrorsSayFileLineAndWhat(t *testing.T) {
	for _, tc := range []struct {
		name, user, project string
		want                []string
	}{
		{"unknown user key", "connect:\n  listen: x\n  lisen: y\n", "", []string{"config.yaml:3:3:", `unknown key "lisen" in connect`, "valid keys: allow-other-users, also-proxy,"}},
		{"unknown top key", "conect:\n  listen: x\n", "", []string{"config.yaml:1:1:", `unknown key "conect"`, "valid keys: connect, version"}},
		{"bad int", "connect:\n  lanes: four\n", "", []string{"config.yaml:2:10:", "lanes: wrong type: want an integer", `"four"`}},
		{"bad bool", "connect:\n  allow-other-users: yes please\n", "", []string{"config.yaml:2:22:", "want true or false"}},
		{"list wanted", "connect:\n  also-proxy: 10.0.0.0/8\n", "", []string{"config.yaml:2:15:", "also-proxy: wrong type: want a list of strings"}},
		{"string wanted", "", "namespace: [a, b]\n", []string{"tp.yaml:1:12:", "namespace: wrong type: want a string, got a list"}},
		{"unknown intercept key", "", "intercepts:\n  web:\n    workload: w\n    port: [\"1\"]\n", []string{"tp.yaml:4:5:", `unknown key "port" in intercepts.web`, "ports"}},
		{"bad duration", "", "run:\n  timeout: soon\n", []string{"tp.yaml:2:12:", "want a duration"}},
		{"version", "", "version: 2\n", []string{"tp.yaml:1:10:", "want 1"}},
		{"syntax", "", "run:\n  vif: [\n", []string{"tp.yaml:"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			user := filepath.Join(dir, "cfg", "tp", "config.yaml")
			if tc.user != "" {
				write(t, user, tc.user)
			}
			if tc.project != "" {
				write(t, filepath.Join(dir, "p", ProjectFile), tc.project)
			}
			_ = os.MkdirAll(filepath.Join(dir, "p", ".git"), 0o755)
			_, err := Load(env(map[string]string{UserEnv: user}), filepath.Join(dir, "p"))
			if tc.user == "" {
				_, err = Load(env(nil), filepath.Join(dir, "p"))
			}
			if err == nil {
				t.Fatal("loaded")
			}
			if remote.KindOf(err) != remote.Usage {
				t.Errorf("%v: kind %v, want usage (exit status 2)", err, remote.KindOf(err))
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func TestMissingFiles(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "nothing"))
	t.Setenv("HOME", dir)
	fs, err := Load(env(nil), dir)
	if err != nil || fs.User != nil || fs.Project != nil {
		t.Fatalf("no files: %+v, %v", fs, err)
	}
	// One that TP_CONFIG names must be there.
	if _, err := Load(env(map[string]string{UserEnv: filepath.Join(dir, "none.yaml")}), dir); err == nil || remote.KindOf(err) != remote.Usage {
		t.Errorf("TP_CONFIG naming no file: %v", err)
	}
}

// fakeFlags are a command line: what it set, and what Apply set.
type fakeFlags struct {
	given map[string]bool
	set   map[string][]string
}

func (f *fakeFlags) IsSet(name string) bool { return f.given[name] || len(f.set[name]) > 0 }
func (f *fakeFlags) Set(name, value string) error {
	f.set[name] = append(f.set[name], value)
	return nil
}

const (
	userFile = `connect:
  listen: 127.0.0.1:2080
  manager-namespace: user-ns
  shell: fish
  upstream-proxy: http://alice:s3cret@proxy.corp:8080
`
	projectFile = `version: 1
namespace: shop
intercepts:
  web-app:
    workload: deploy/web-app
    ports: ["8080:http"]
    http-header: ["x-dev=auto", "x-b=~a,b"]
    env-file: .env.cluster
  db:
    ports: ["5432"]
run:
  vif: "off"
  manager-namespace: project-ns
`
)

func loadBoth(t *testing.T) *Files {
	t.Helper()
	dir := t.TempDir()
	user := write(t, filepath.Join(dir, "config.yaml"), userFile)
	write(t, filepath.Join(dir, "p", ProjectFile), projectFile)
	fs, err := Load(env(map[string]string{UserEnv: user}), filepath.Join(dir, "p"))
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

// Flags win over the files, the project file over the user file, the files over defaults
// (a flag nobody sets keeps its default: Apply leaves it alone).
func TestPrecedence(t *testing.T) {
	fs := loadBoth(t)
	// A path is the project's: relative to its folder, not to where tp runs.
	envFile := filepath.Join(filepath.Dir(fs.Project.Path), ".env.cluster")
	web, err := fs.Intercept("web-app", false)
	if err != nil || web == nil || web.Workload() != "deploy/web-app" {
		t.Fatalf("web-app: %+v, %v", web, err)
	}
	for _, tc := range []struct {
		command string
		ic      *Intercept
		given   []string
		want    map[string][]string
	}{
		{"connect", nil, nil, map[string][]string{"listen": {"127.0.0.1:2080"}, "manager-namespace": {"user-ns"}, "shell": {"fish"}, "upstream-proxy": {"http://alice:s3cret@proxy.corp:8080"}}},
		{"connect", nil, []string{"listen", "upstream-proxy"}, map[string][]string{"manager-namespace": {"user-ns"}, "shell": {"fish"}}},
		{"env", nil, nil, map[string][]string{"shell": {"fish"}}},
		{"run", nil, nil, map[string][]string{"vif": {"off"}, "manager-namespace": {"project-ns"}, "namespace": {"shop"}}},
		{"run", nil, []string{"namespace", "vif"}, map[string][]string{"manager-namespace": {"project-ns"}}},
		{"intercept", web, nil, map[string][]string{"port": {"8080:http"}, "http-header": {"x-dev=auto", "x-b=~a,b"}, "env-file": {envFile}, "namespace": {"shop"}}},
		{"intercept", web, []string{"port"}, map[string][]string{"http-header": {"x-dev=auto", "x-b=~a,b"}, "env-file": {envFile}, "namespace": {"shop"}}},
		{"intercept", nil, nil, map[string][]string{"namespace": {"shop"}}},
	} {
		fl := &fakeFlags{given: map[string]bool{}, set: map[string][]string{}}
		for _, g := range tc.given {
			fl.given[g] = true
		}
		if _, err := Apply(fl, fs.Settings(tc.command, tc.ic)); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(fl.set, tc.want) {
			t.Errorf("tp %s, given %q: set %q, want %q", tc.command, tc.given, fl.set, tc.want)
		}
	}
}

func TestInterceptNames(t *testing.T) {
	fs := loadBoth(t)
	if ic, err := fs.Intercept("db", false); err != nil || ic == nil || ic.Workload() != "db" {
		t.Errorf("db (no workload key: its name): %+v, %v", ic, err)
	}
	if ic, err := fs.Intercept("other", true); err != nil || ic != nil {
		t.Errorf("a workload with --port: %+v, %v", ic, err)
	}
	_, err := fs.Intercept("other", false)
	if err == nil || remote.KindOf(err) != remote.Usage || !strings.Contains(err.Error(), "tp.yaml:3:") || !strings.Contains(err.Error(), `unknown intercept "other"; defined: web-app, db`) {
		t.Errorf("unknown name: %v", err)
	}
	if _, err := fs.Intercept("", false); err == nil || !strings.Contains(err.Error(), "2 intercepts are defined (web-app, db)") {
		t.Errorf("no name, two defined: %v", err)
	}
	fs.Project.Intercepts = fs.Project.Intercepts[:1]
	if ic, err := fs.Intercept("", false); err != nil || ic == nil || ic.Name != "web-app" {
		t.Errorf("no name, one defined: %+v, %v", ic, err)
	}
}

func TestViewSaysWhereEachValueCameFrom(t *testing.T) {
	fs := loadBoth(t)
	entries := fs.View(Defaults{"connect": {"listen": "127.0.0.1:1080", "transport": "auto"}, "run": {"vif": "auto", "transport": "auto"}}, "")
	var out bytes.Buffer
	if err := fs.Render(&out, entries, "json"); err != nil {
		t.Fatal(err)
	}
	var got map[string]map[string]any
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	src := func(section, key string) string {
		return got[section][key].(map[string]any)["source"].(string)
	}
	for _, c := range []struct{ section, key, want string }{
		{"connect", "listen", "config.yaml:2"}, {"connect", "transport", "default"},
		{"run", "vif", ProjectFile + ":12"}, {"run", "transport", "default"},
	} {
		if s := src(c.section, c.key); !strings.HasSuffix(s, c.want) {
			t.Errorf("%s.%s from %q, want %q", c.section, c.key, s, c.want)
		}
	}
	if ns := got["namespace"]; ns["value"] != "shop" || !strings.HasSuffix(ns["source"].(string), ProjectFile+":2") {
		t.Errorf("namespace %v", ns)
	}
	if ns := fs.View(nil, "flagged")[len(ConnectKeys)]; ns.Values[0] != "flagged" || ns.Origin.String() != "flag" {
		t.Errorf("namespace given as a flag: %+v", ns)
	}
	if strings.Contains(out.String(), "s3cret") || !strings.Contains(out.String(), "alice:xxxxx@proxy.corp") {
		t.Errorf("the view shows the upstream proxy's password, or no proxy:\n%s", out.String())
	}
	out.Reset()
	if err := fs.Render(&out, entries, "yaml"); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"transport: auto # default", "vif: off # ", "ports: ['8080:http'] # "} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("yaml view lacks %q:\n%s", w, out.String())
		}
	}
}
