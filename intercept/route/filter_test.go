package route

import (
	"strings"
	"testing"
)

type req struct {
	path   string
	header map[string][]string
}

func (r req) Path() string                { return r.path }
func (r req) Values(name string) []string { return r.header[name] }

func mustHeader(t *testing.T, s string) Match {
	t.Helper()
	m, err := ParseHeader(s)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func mustPath(t *testing.T, s string) *Match {
	t.Helper()
	m, err := ParsePath(s)
	if err != nil {
		t.Fatal(err)
	}
	return &m
}

func TestParseRefusesWhatCannotMatch(t *testing.T) {
	for _, s := range []string{"x-dev", "=a", "x dev=a", "x-dev=~(", "X:Y=a"} {
		if _, err := ParseHeader(s); err == nil {
			t.Errorf("ParseHeader(%q) took it", s)
		}
	}
	for _, s := range []string{"api", "=api", "~(", ""} {
		if _, err := ParsePath(s); err == nil {
			t.Errorf("ParsePath(%q) took it", s)
		}
	}
	if m := mustHeader(t, "X-Dev=~alice|bob"); m.Name != "x-dev" || m.Kind != Regex || m.Value != "alice|bob" {
		t.Errorf("ParseHeader: %+v", m)
	}
	if m := mustPath(t, "=/api/v1"); m.Kind != Exact || m.Value != "/api/v1" {
		t.Errorf("ParsePath: %+v", m)
	}
	if err := (Filter{}).Check(); err == nil {
		t.Error("an empty filter passed its check")
	}
	if err := (Filter{ID: "a b"}).Check(); err == nil {
		t.Error("an id with a space passed its check")
	}
}

func TestMatch(t *testing.T) {
	f := Filter{Headers: []Match{mustHeader(t, "x-dev=alice"), mustHeader(t, "x-env=~(dev|test)-[0-9]+")}, Path: mustPath(t, "/api/"), ID: "alice-1a2b"}
	m, err := f.Compile()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		r    req
		want bool
	}{
		{req{"/api/x", map[string][]string{"x-dev": {"alice"}, "x-env": {"dev-1"}}}, true},
		{req{"/api/x", map[string][]string{"x-dev": {"bob", "alice"}, "x-env": {"test-22"}}}, true}, // any value
		{req{"/api/x", map[string][]string{"x-dev": {"alice"}, "x-env": {"dev-1x"}}}, false},        // regex matches whole
		{req{"/api/x", map[string][]string{"x-dev": {"alicex"}, "x-env": {"dev-1"}}}, false},
		{req{"/ap", map[string][]string{"x-dev": {"alice"}, "x-env": {"dev-1"}}}, false},
		{req{"/api/x", map[string][]string{"x-dev": {"alice"}}}, false},
		{req{"/other", map[string][]string{IDHeader: {"alice-1a2b"}}}, true}, // the id alone
		{req{"/other", map[string][]string{IDHeader: {"alice-1a2"}}}, false},
	} {
		if got := m.Match(c.r); got != c.want {
			t.Errorf("%s %v: %v, want %v", c.r.path, c.r.header, got, c.want)
		}
	}
	idOnly, _ := Filter{ID: "bob-3c4d"}.Compile()
	if idOnly.Match(req{"/", nil}) || !idOnly.Match(req{"/", map[string][]string{IDHeader: {"bob-3c4d"}}}) {
		t.Error("an id-only filter matches other than its id")
	}
	exact, _ := Filter{Path: mustPath(t, "=/a")}.Compile()
	if !exact.Match(req{"/a", nil}) || exact.Match(req{"/ab", nil}) {
		t.Error("an exact path matches other than itself")
	}
}

func TestMayOverlap(t *testing.T) {
	h := func(s string) []Match { return []Match{mustHeader(t, s)} }
	for _, c := range []struct {
		a, b Filter
		want bool
	}{
		{Filter{Headers: h("x-dev=a")}, Filter{Headers: h("x-dev=b")}, false},
		{Filter{Headers: h("x-dev=a")}, Filter{Headers: h("x-dev=a")}, true},
		{Filter{Headers: h("x-dev=a")}, Filter{Headers: h("x-other=b")}, true},
		{Filter{Headers: h("x-dev=a")}, Filter{Headers: h("x-dev=~b|a")}, true},
		{Filter{Headers: h("x-dev=a")}, Filter{Path: mustPath(t, "/api")}, true},
		{Filter{Path: mustPath(t, "/api/")}, Filter{Path: mustPath(t, "/web/")}, false},
		{Filter{Path: mustPath(t, "/api/")}, Filter{Path: mustPath(t, "/api/v1/")}, true},
		{Filter{Path: mustPath(t, "=/api/v1")}, Filter{Path: mustPath(t, "/web")}, false},
		{Filter{Path: mustPath(t, "=/api/v1")}, Filter{Path: mustPath(t, "/api")}, true},
		{Filter{ID: "a"}, Filter{Path: mustPath(t, "/api")}, false},
	} {
		if got := MayOverlap(c.a, c.b); got != c.want || MayOverlap(c.b, c.a) != c.want {
			t.Errorf("MayOverlap(%s; %s) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}

func TestFilterRoundTripsThroughTheProtocol(t *testing.T) {
	f := Filter{Headers: []Match{mustHeader(t, "x-dev=~a.*")}, Path: mustPath(t, "=/x"), ID: "me-1"}
	g := FromProto(f.Proto())
	if g.String() != f.String() || !strings.Contains(f.String(), "x-dev=~a.*") {
		t.Errorf("%s became %s", f, g)
	}
}
