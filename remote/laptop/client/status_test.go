package client

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/tpdev/tp/remote/laptop/control"
	"github.com/tpdev/tp/remote/laptop/output"
	"github.com/tpdev/tp/remote/laptop/session"
)

func TestPrintStatus(t *testing.T) {
	now := time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)
	st := session.Status{
		State: session.Connected, Since: now.Add(-90 * time.Second), ManagerVersion: "v1", ManagerPod: "tp-manager-x",
		AllowedCIDRs: []string{"10.20.0.0/16"}, Reconnects: 1, LastError: "lost", LastErrorAt: now.Add(-time.Minute),
		History:   []session.Transition{{At: now.Add(-2 * time.Minute), State: session.Reconnecting, Error: "lost"}, {At: now.Add(-time.Minute), State: session.Connected}},
		Lanes:     []session.LaneStatus{{State: "ready", Flows: 2, Bulk: 1}},
		OpenFlows: 2, TotalFlows: 10, FailedFlows: 1, BytesIn: 1536, BytesOut: 3 << 20,
		Intercepts: []session.InterceptSpec{
			{Name: "web-http", Namespace: "ns", Kind: "Deployment", Workload: "web", Port: "http", Local: "127.0.0.1:8080", Since: now.Add(-time.Minute),
				Problem: "Service web port 80 targets 8080 again (changed back, e.g. by a GitOps tool)"},
			{Name: "db-5432", Namespace: "ns", Kind: "StatefulSet", Workload: "db", Port: "tp-5432", Local: "127.0.0.1:5432", Since: now.Add(-time.Minute)},
		},
	}
	raw, _ := json.Marshal(st)
	info := control.Info{Name: "default", PID: 42, Version: "v1", Context: "kind", Cluster: "https://api:6443", Namespace: "ns",
		ManagerNamespace: "tp-system", Listen: "127.0.0.1:1080", DNSListen: "127.0.0.1:1053", ProxyAuth: true, Started: now.Add(-time.Hour), Session: raw}
	var out bytes.Buffer
	printStatus(&out, info, now)
	for _, want := range []string{
		"session default: connected (for 1m30s)\n",
		"  context:     kind (https://api:6443)\n",
		"  namespace:   ns\n",
		"  manager:     v1 in tp-system (pod tp-manager-x)\n",
		"  may dial:    the cluster's ranges and names; also allowed: 10.20.0.0/16\n",
		"  proxy:       127.0.0.1:1080 (SOCKS5 and HTTP, asks for credentials)\n",
		"  dns:         127.0.0.1:1053\n",
		"  flows:       2 open, 10 total, 1 failed; 1.5 KiB in, 3.0 MiB out\n",
		"  lanes:       0 ready (2 flows, 1 bulk)\n",
		"  reconnects:  1 (last error 1m0s ago: lost)\n    15:02:05 reconnecting: lost\n    15:03:05 connected\n",
		"  intercepts:\n    web-http: deployment ns/web port http to 127.0.0.1:8080 (for 1m0s)\n" +
			"      problem: Service web port 80 targets 8080 again (changed back, e.g. by a GitOps tool)\n" +
			"    db-5432: statefulset ns/db port tp-5432 to 127.0.0.1:5432 (for 1m0s)\n",
		"  up since:    2026-01-02T14:04:05Z (pid 42, tp v1)\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("tp status lacks %q:\n%s", want, out.String())
		}
	}
	// tp status --json carries the intercepts with their problems as the session tells them.
	var back session.Status
	if err := json.Unmarshal(info.Session, &back); err != nil || len(back.Intercepts) != 2 || back.Intercepts[0].Problem == "" ||
		!strings.Contains(string(info.Session), `"problem":"Service web port 80`) {
		t.Errorf("the status JSON: %s (%v)", info.Session, err)
	}
	out.Reset()
	printStatus(&out, control.Info{Name: "x"}, now)
	if !strings.Contains(out.String(), "also allowed: none (tp install --allow-cidr adds ranges)") || strings.Contains(out.String(), "dns:") || strings.Contains(out.String(), "intercepts:") {
		t.Errorf("a bare status:\n%s", out.String())
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 5 << 30: "5.0 GiB"} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestStatusOfSessions(t *testing.T) {
	shortHome(t)
	var out bytes.Buffer
	c := New(KubeFlags{}, &out, &out)
	if err := c.Status(t.Context(), StatusConfig{JSON: true}); err != nil || strings.Join(strings.Fields(out.String()), "") != `{"version":1,"kind":"tp.status","sessions":[]}` {
		t.Errorf("no session, JSON: %v %q, want no sessions ([], not null)", err, out.String())
	}
	if err := c.Status(t.Context(), StatusConfig{Name: "gone"}); err == nil || exitCode(err) != 2 || !strings.Contains(err.Error(), `no connection named "gone" is running`) {
		t.Errorf("tp status --name gone: %v", err)
	}
	fakeDaemon(t, "a", control.Info{Name: "a", Context: "kind", Namespace: "ns"})
	for _, tt := range []struct {
		kf   KubeFlags
		want string
	}{
		{KubeFlags{}, "session a:"},
		{KubeFlags{Context: "kind", Namespace: "ns"}, "session a:"},
		{KubeFlags{Context: "other"}, "tp: not connected"},
		{KubeFlags{Namespace: "other"}, "tp: not connected"},
	} {
		out.Reset()
		c := New(tt.kf, &out, &out)
		if err := c.Status(t.Context(), StatusConfig{}); err != nil || !strings.Contains(out.String(), tt.want) {
			t.Errorf("tp status with %+v: %v %q, want %q", tt.kf, err, out.String(), tt.want)
		}
	}
	out.Reset()
	if err := c.Quit(t.Context(), QuitConfig{Name: "none"}); err == nil || exitCode(err) != 2 {
		t.Errorf("tp quit --name none: %v, want a user error", err)
	}
}

// tp status -o json and -o yaml (and --json, the old flag) print output.Status: the
// sessions as their daemons report them.
func TestStatusOutput(t *testing.T) {
	shortHome(t)
	started := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	info := control.Info{Name: "a", PID: 7, Version: "v0.5.0", Context: "kind", Cluster: "https://api:6443", Namespace: "ns", ManagerNamespace: "tp-system",
		Listen: "127.0.0.1:1080", DNSListen: "127.0.0.1:1053", ProxyAuth: true, Started: started, Session: json.RawMessage(`{"state":"connected","openFlows":2}`),
		Upstream: &control.Upstream{All: "http://proxy:8080", Source: "HTTPS_PROXY"}, AlsoProxy: []string{"10.9.0.0/16"}}
	fakeDaemon(t, "a", info)
	for _, cfg := range []StatusConfig{{Output: "json"}, {JSON: true}, {Output: "yaml"}, {Output: "text", JSON: true}} {
		var out bytes.Buffer
		if err := New(KubeFlags{}, &out, &out).Status(t.Context(), cfg); err != nil {
			t.Fatalf("%+v: %v", cfg, err)
		}
		var got output.Status
		var err error
		if cfg.Output == "yaml" {
			err = yaml.UnmarshalStrict(out.Bytes(), &got)
		} else {
			err = json.Unmarshal(out.Bytes(), &got)
		}
		if err != nil || got.Header != output.NewHeader(output.KindStatus) || len(got.Sessions) != 1 {
			t.Fatalf("tp status %+v: %v\n%s", cfg, err, out.String())
		}
		s := got.Sessions[0]
		if s.Name != "a" || s.PID != 7 || s.Version != "v0.5.0" || s.Context != "kind" || s.Cluster != "https://api:6443" || s.Namespace != "ns" ||
			s.ManagerNamespace != "tp-system" || s.Listen != "127.0.0.1:1080" || s.DNSListen != "127.0.0.1:1053" || !s.ProxyAuth || !s.Started.Equal(started) ||
			s.Upstream == nil || *s.Upstream != *info.Upstream || strings.Join(s.AlsoProxy, ",") != "10.9.0.0/16" {
			t.Errorf("tp status %+v: session %+v", cfg, s)
		}
		var st session.Status
		if err := json.Unmarshal(s.Session, &st); err != nil || st.State != session.Connected || st.OpenFlows != 2 {
			t.Errorf("tp status %+v: the session's own status %s (%v)", cfg, s.Session, err)
		}
	}
	if err := New(KubeFlags{}, &bytes.Buffer{}, &bytes.Buffer{}).Status(t.Context(), StatusConfig{Output: "xml"}); err == nil || exitCode(err) != 2 || err.Error() != `-o "xml": want text, json or yaml` {
		t.Errorf("tp status -o xml: %v", err)
	}
}
