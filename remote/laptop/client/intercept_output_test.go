package client

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/tpdev/tp/intercept"
	httproute "github.com/tpdev/tp/intercept/route"
	"github.com/tpdev/tp/remote/laptop/output"
	"github.com/tpdev/tp/remote/laptop/session"
)

// tp intercept -o json and yaml need stdout: not with -- CMD (it is the command's), nor
// with --dry-run (a diff). Both refusals come before anything touches the cluster.
func TestInterceptOutputFlag(t *testing.T) {
	for _, tt := range []struct {
		cfg  InterceptConfig
		want output.Format
		err  string
	}{
		{InterceptConfig{}, output.Text, ""},
		{InterceptConfig{Output: "json"}, output.JSON, ""},
		{InterceptConfig{Output: "yaml"}, output.YAML, ""},
		{InterceptConfig{Output: "text", Command: []string{"./app"}}, output.Text, ""},
		{InterceptConfig{Output: "text", DryRun: true}, output.Text, ""},
		{InterceptConfig{Output: "xml"}, "", `-o "xml": want text, json or yaml`},
		{InterceptConfig{Output: "json", Command: []string{"./app"}}, "", "-o json: with -- CMD, stdout is the command's and tp's messages stay text on stderr"},
		{InterceptConfig{Output: "yaml", DryRun: true}, "", "-o yaml: --dry-run prints a diff of the workload, as text only"},
	} {
		got, err := interceptFormat(tt.cfg)
		if tt.err == "" && (err != nil || got != tt.want) || tt.err != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.err) || exitCode(err) != 2) {
			t.Errorf("interceptFormat(%+v) = %q, %v; want %q, %q", tt.cfg, got, err, tt.want, tt.err)
		}
	}
	c := New(KubeFlags{Kubeconfig: "/nonexistent"}, &bytes.Buffer{}, &bytes.Buffer{})
	err := c.Intercept(t.Context(), InterceptConfig{Workload: "web", Ports: []string{"8080"}, Output: "json", Command: []string{"./app"}})
	if err == nil || !strings.HasPrefix(err.Error(), "-o json: with -- CMD") {
		t.Errorf("tp intercept -o json -- ./app: %v, want the usage error first", err)
	}
}

// The intercept held, as -o json and yaml print it: every port, with what holding it said.
func TestInterceptResult(t *testing.T) {
	filter := &httproute.Filter{Headers: []httproute.Match{{Name: "x-dev", Value: "alice"}}, ID: "alice-1a2b"}
	targets := []intercept.Target{{Service: "web", ServicePort: 80, TargetPortName: "http"}, {Service: "web", ServicePort: 9090, TargetPortName: "grpc"}}
	in := &pendingIntercept{ref: intercept.Ref{Namespace: "ns", Kind: "Deployment", Name: "web"}, name: "web",
		helds: []session.Held{{Agents: 2, Overlap: "overlaps bob's"}, {Agents: 2}}}
	for i, tg := range targets {
		in.ports = append(in.ports, pendingPort{target: &targets[i], spec: session.InterceptSpec{Name: "web-" + tg.TargetPortName, Group: "web",
			Namespace: "ns", Kind: "Deployment", Workload: "web", Port: tg.TargetPortName, Local: []string{"127.0.0.1:8080", "127.0.0.1:9090"}[i], HTTP: filter}})
	}
	for _, f := range []output.Format{output.JSON, output.YAML} {
		var out bytes.Buffer
		if err := output.Write(&out, f, in.result()); err != nil {
			t.Fatal(err)
		}
		var got output.Intercept
		var err error
		if f == output.JSON {
			err = json.Unmarshal(out.Bytes(), &got)
		} else {
			err = yaml.UnmarshalStrict(out.Bytes(), &got)
		}
		if err != nil {
			t.Fatalf("%s: %v\n%s", f, err, out.String())
		}
		if got.Header != output.NewHeader(output.KindIntercept) || got.Name != "web" || got.Workload != (output.WorkloadRef{Namespace: "ns", Kind: "Deployment", Name: "web"}) ||
			got.Wiretap || got.HTTP == nil || got.HTTP.ID != "alice-1a2b" || len(got.HTTP.Headers) != 1 || got.HTTP.Headers[0].Name != "x-dev" {
			t.Errorf("%s: %+v", f, got)
		}
		want := []output.InterceptPort{
			{Name: "web-http", Port: "http", Service: "web", ServicePort: 80, Local: "127.0.0.1:8080", Agents: 2, Note: "overlaps bob's"},
			{Name: "web-grpc", Port: "grpc", Service: "web", ServicePort: 9090, Local: "127.0.0.1:9090", Agents: 2},
		}
		if len(got.Ports) != len(want) {
			t.Fatalf("%s: ports %+v", f, got.Ports)
		}
		for i := range want {
			if got.Ports[i] != want[i] {
				t.Errorf("%s: port %d\n %+v\nwant\n %+v", f, i, got.Ports[i], want[i])
			}
		}
		if !strings.Contains(out.String(), `kind`) || !strings.Contains(out.String(), "tp.intercept") {
			t.Errorf("%s lacks its kind:\n%s", f, out.String())
		}
	}
}
