package client

import (
	"bytes"
	"context"
	"errors"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/tpdev/tp/intercept"
	"github.com/tpdev/tp/remote/agentspec"
	"github.com/tpdev/tp/remote/laptop/session"
)

func TestParsePort(t *testing.T) {
	for in, want := range map[string]struct {
		local  int
		target string
	}{"8080": {8080, ""}, "8080:80": {8080, "80"}, "1:http": {1, "http"}, "65535:": {65535, ""}} {
		local, target, err := parsePort(in)
		if err != nil || local != want.local || target != want.target {
			t.Errorf("parsePort(%q) = %d, %q, %v; want %d, %q", in, local, target, err, want.local, want.target)
		}
	}
	for _, in := range []string{"", "http", "0", "65536", "-1:80", ":80"} {
		if _, _, err := parsePort(in); err == nil || exitCode(err) != 2 || !strings.Contains(err.Error(), "want LOCAL[:REMOTE]") {
			t.Errorf("parsePort(%q): %v, want a user error", in, err)
		}
	}
}

func TestWithEnv(t *testing.T) {
	got := withEnv([]string{"HOME=/h", "DB=local", "PATH=/bin"}, []intercept.EnvVar{{Name: "DB", Value: "remote"}, {Name: "NEW", Value: "x=y"}})
	want := []string{"DB=remote", "NEW=x=y", "HOME=/h", "PATH=/bin"}
	if !slices.Equal(got, want) {
		t.Errorf("withEnv = %q, want %q", got, want)
	}
}

func TestAppContainer(t *testing.T) {
	pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{
		{Name: "sidecar"}, {Name: "app", Ports: []corev1.ContainerPort{{ContainerPort: 8080}}}, {Name: "last"}, {Name: agentspec.Container},
	}}}
	if got := appContainer(pod, 8080); got != "app" {
		t.Errorf("the container serving 8080: %q", got)
	}
	if got := appContainer(pod, 9999); got != "last" {
		t.Errorf("no container serves the port: %q, want the last that is not tp's agent", got)
	}
}

func TestPrintPlan(t *testing.T) {
	ref := intercept.Ref{Namespace: "ns", Kind: "Deployment", Name: "web"}
	var out bytes.Buffer
	printPlan(&out, &intercept.Plan{Workload: ref})
	if out.String() != "# Deployment ns/web already has the agent for this port: nothing changes\n" {
		t.Errorf("unchanged plan: %q", out.String())
	}
	out.Reset()
	printPlan(&out, &intercept.Plan{Workload: ref, Changed: true, Before: "a\nb\nc", After: "a\nx\nc\nd",
		Services: []intercept.ServiceChange{{Name: "web", Before: "port: 80", After: "port: 80"}}, Warnings: []string{"careful"}})
	want := "# Deployment ns/web: its pod template before and after\n  a\n+ x\n- b\n  c\n+ d\n# Service web: its ports before and after\n  port: 80\n# note: careful\n"
	if out.String() != want {
		t.Errorf("plan:\n%s\nwant:\n%s", out.String(), want)
	}
}

func TestWaitForAgents(t *testing.T) {
	spec := session.InterceptSpec{Name: "web-http", Namespace: "ns", Kind: "Deployment", Workload: "web"}
	calls := 0
	held, err := waitForAgents(t.Context(), time.Minute, spec, func(context.Context, session.InterceptSpec) (session.Held, error) {
		calls++
		return session.Held{Agents: calls - 1, Overlap: "o"}, nil // none the first time, one the second
	}, nil, 0)
	if err != nil || calls != 2 || held.Overlap != "o" {
		t.Errorf("waitForAgents: %+v, %v after %d asks, want success on the second", held, err, calls)
	}
	refused := errors.New("refused")
	if _, err := waitForAgents(t.Context(), time.Minute, spec, func(context.Context, session.InterceptSpec) (session.Held, error) { return session.Held{}, refused }, nil, 0); err != refused {
		t.Errorf("a refusal: %v", err)
	}
	_, err = waitForAgents(t.Context(), 0, spec, func(context.Context, session.InterceptSpec) (session.Held, error) { return session.Held{}, nil }, nil, 0)
	if err == nil || !strings.Contains(err.Error(), "no traffic agent of Deployment ns/web registered within 0s") {
		t.Errorf("no agent: %v", err)
	}
}

// Pods that started without the agent (the manager could not admit them) are rolled again,
// at most twice, while no agent registers.
func TestWaitForAgentsRollsPodsWithoutTheAgentAgain(t *testing.T) {
	spec := session.InterceptSpec{Name: "web-http", Namespace: "ns", Kind: "Deployment", Workload: "web"}
	calls, rolls := 0, 0
	hold := func(context.Context, session.InterceptSpec) (session.Held, error) {
		calls++
		if calls < 6 {
			return session.Held{Problem: "pod web-1 runs without tp's agent"}, nil
		}
		return session.Held{Agents: 1}, nil
	}
	reroll := func(_ context.Context, problem string) error {
		rolls++
		if !strings.Contains(problem, "without tp's agent") {
			t.Errorf("reroll was told %q", problem)
		}
		return nil
	}
	if _, err := waitForAgents(t.Context(), time.Minute, spec, hold, reroll, time.Millisecond); err != nil || rolls != rerolls {
		t.Errorf("waitForAgents: %v after %d rolls, want %d", err, rolls, rerolls)
	}
	calls, rolls = 10, 0 // agents at once: nothing to roll
	if _, err := waitForAgents(t.Context(), time.Minute, spec, hold, reroll, time.Millisecond); err != nil || rolls != 0 {
		t.Errorf("waitForAgents with agents: %v after %d rolls", err, rolls)
	}
}

func TestHTTPFilterFlags(t *testing.T) {
	if f, err := httpFilter(nil, ""); f != nil || err != nil {
		t.Errorf("no flags: %v, %v; want a whole intercept", f, err)
	}
	f, err := httpFilter([]string{"x-dev=alice", "X-Env=~dev|test"}, "/api/")
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Headers) != 2 || f.Path == nil || !regexp.MustCompile(`^[a-z0-9._-]+-[0-9a-f]{16}$`).MatchString(f.ID) {
		t.Errorf("filter %+v", f)
	}
	if f, err := httpFilter([]string{"auto"}, ""); err != nil || len(f.Headers) != 0 || f.ID == "" {
		t.Errorf("auto: %+v, %v; want the id alone", f, err)
	}
	for _, bad := range [][2]string{{"x-dev", ""}, {"", "api"}, {"x-dev=~(", ""}} {
		var headers []string
		if bad[0] != "" {
			headers = []string{bad[0]}
		}
		if _, err := httpFilter(headers, bad[1]); err == nil || exitCode(err) != 2 {
			t.Errorf("%q: %v, want a usage error", bad, err)
		}
	}
	if !looksTLS(&intercept.Target{ServicePortName: "https"}) || !looksTLS(&intercept.Target{ServicePort: 443, TargetPortName: "web"}) ||
		looksTLS(&intercept.Target{ServicePort: 80, ServicePortName: "http", TargetPortName: "http"}) {
		t.Error("looksTLS")
	}
}

func TestInterceptNeedsWorkloadAndPort(t *testing.T) {
	c := New(KubeFlags{}, &bytes.Buffer{}, &bytes.Buffer{})
	if err := c.Intercept(t.Context(), InterceptConfig{}); err == nil || exitCode(err) != 2 || !strings.Contains(err.Error(), "name the workload") {
		t.Errorf("no workload: %v", err)
	}
	k := &Kube{Namespace: "ns"}
	if _, err := c.prepareIntercept(t.Context(), k, InterceptConfig{Workload: "web"}); err == nil || exitCode(err) != 2 || !strings.Contains(err.Error(), "--port is required: tp intercept web") {
		t.Errorf("no port: %v", err)
	}
}

// A tp intercept -- CMD hears of problems once the intercept is set up: what stands then,
// and every change after.
func TestProblemReporter(t *testing.T) {
	var out bytes.Buffer
	p := &problemReporter{w: &out}
	p.report("web-http", "pod web-1 runs without tp's agent: it was created before tp's agent record")
	p.report("web-http", "")
	p.report("api-grpc", "Service api port 80 targets 8080 again")
	if out.Len() != 0 {
		t.Fatalf("printed while the intercept was set up: %q", out.String())
	}
	p.start()
	p.report("api-grpc", "")
	p.report("api-grpc", "")
	p.report("web-http", "the agent record of deployment/web is gone")
	want := "tp: intercept api-grpc: Service api port 80 targets 8080 again\n" +
		"tp: intercept api-grpc: delivers again\n" +
		"tp: intercept web-http: the agent record of deployment/web is gone\n"
	if out.String() != want {
		t.Errorf("printed:\n%s\nwant:\n%s", out.String(), want)
	}
}
