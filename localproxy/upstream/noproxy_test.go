package upstream

import (
	"net/netip"
	"strings"
	"testing"
)

func TestMergeNoProxy(t *testing.T) {
	dropSvc := func(e string) bool { return !strings.HasSuffix(e, ".svc") && e != ".cluster.local" }
	tests := []struct {
		name, user string
		keep       func(string) bool
		add        []string
		want       string
	}{
		{name: "empty", want: ""},
		{name: "add only", add: []string{"localhost", "127.0.0.1", "::1"}, want: "localhost,127.0.0.1,::1"},
		{name: "trim, empties, duplicates", user: " .corp, ,10.0.0.0/8,,.CORP,.corp ", want: ".corp,10.0.0.0/8"},
		{name: "keep drops", user: ".corp,.svc,.cluster.local,x.svc,git.example", keep: dropSvc, want: ".corp,git.example"},
		{name: "add not repeated", user: "LocalHost,.corp", add: []string{"localhost", "127.0.0.1", " ", "127.0.0.1"}, want: "LocalHost,.corp,127.0.0.1"},
		{name: "add not filtered by keep", user: ".svc", keep: dropSvc, add: []string{"a.svc"}, want: "a.svc"},
	}
	for _, tt := range tests {
		if got := MergeNoProxy(tt.user, tt.keep, tt.add...); got != tt.want {
			t.Errorf("%s: MergeNoProxy(%q) = %q, want %q", tt.name, tt.user, got, tt.want)
		}
	}
}

func TestCoversCluster(t *testing.T) {
	ranges := []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12"), netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd00:10::/64")}
	tests := []struct {
		entry, domain string
		want          bool
	}{
		{".svc", "", true},
		{"svc", "", true},
		{".cluster.local", "", true},
		{"cluster.local", "", true},
		{".svc.cluster.local", "", true},
		{"*.cluster.local", "", true},
		{"local", "", true},
		{".local", "", true},
		{"CLUSTER.LOCAL.", "", true},
		{"default.svc", "", true},
		{".default.svc.cluster.local", "", true},
		{"cluster.local:443", "", true},
		{"*", "", true},
		{" * ", "", true},
		{"10.96.0.10", "", true},
		{"10.96.0.10:53", "", true},
		{"10.244.3.4", "", true},
		{"10.0.0.0/8", "", true},   // contains the ranges
		{"10.97.0.0/16", "", true}, // inside one
		{"fd00:10::5", "", true},
		{"[fd00:10::5]:80", "", true},
		{"fd00::/16", "", true},

		{"", "", false},
		{".corp", "", false},
		{"example.com", "", false},
		{"cluster.localhost", "", false},
		{"mycluster.local", "", false},
		{"svc.example.com", "", false},
		{"10.95.255.255", "", false},
		{"192.168.0.0/16", "", false},
		{"11.0.0.0/8", "", false},
		{"2001:db8::/32", "", false},
		{"localhost", "", false},
		{"127.0.0.1", "", false},

		{".k8s.example", "k8s.example", true},
		{"example", "k8s.example.", true},
		{"cluster.local", "k8s.example", false},
		{".svc", "k8s.example", true},
	}
	for _, tt := range tests {
		if got := CoversCluster(tt.entry, tt.domain, ranges); got != tt.want {
			t.Errorf("CoversCluster(%q, %q) = %v, want %v", tt.entry, tt.domain, got, tt.want)
		}
	}
}
