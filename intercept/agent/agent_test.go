package agent

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"
)

func TestParsePorts(t *testing.T) {
	ports, err := ParsePorts(" http:9900:8080, tp-grpc:9901:9090,")
	if err != nil || len(ports) != 2 || ports[0] != (Port{"http", 9900, 8080}) || ports[1] != (Port{"tp-grpc", 9901, 9090}) {
		t.Fatalf("ParsePorts = %v, %v", ports, err)
	}
	for _, bad := range []string{
		"", ",", "http:9900", "http:9900:8080:1", "http:0:8080", "http:9900:65536", "http:x:8080",
		":9900:8080", "HTTP:9900:8080", "8080:9900:8080", "-http:9900:8080", "a--b:9900:8080", "a-very-long-port-name:9900:8080",
		"http:9900:8080,http:9901:8081", "http:9900:8080,grpc:9900:9090",
	} {
		if ports, err := ParsePorts(bad); err == nil {
			t.Errorf("ParsePorts(%q) = %v, want an error", bad, ports)
		}
	}
}

// FuzzParsePorts checks what TP_AGENT_PORTS may hold: every accepted list has ports in
// 1-65535 named as the API server names container ports, no name or listen port twice,
// and reads back the same once written out.
func FuzzParsePorts(f *testing.F) {
	for _, seed := range []string{
		"http:9900:8080",
		"http:9900:8080,tp-grpc:9901:9090",
		" web :9900:80 , ",
		"tp-8080:9900:8080",
		"http:+9900:08080",
		"http:9900:65535,a:9901:1",
		"http:9900:65536",
		"http:9900:8080,http:9901:8081",
		"a-very-long-port-name:9900:8080",
		"héllo:9900:8080",
		":::",
		"",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, env string) {
		ports, err := ParsePorts(env)
		if err != nil {
			if ports != nil || !strings.Contains(err.Error(), "agent") {
				t.Fatalf("ParsePorts(%q) = %v, %v: an error names the agent and returns no ports", env, ports, err)
			}
			return
		}
		if len(ports) == 0 {
			t.Fatalf("ParsePorts(%q) accepted no ports", env)
		}
		names, listens := map[string]bool{}, map[int]bool{}
		var again []string
		for _, p := range ports {
			if msgs := validation.IsValidPortName(p.Name); len(msgs) > 0 {
				t.Fatalf("ParsePorts(%q) accepted port name %q: %v", env, p.Name, msgs)
			}
			if p.Listen < 1 || p.Listen > 65535 || p.App < 1 || p.App > 65535 {
				t.Fatalf("ParsePorts(%q) accepted %v", env, p)
			}
			if names[p.Name] || listens[p.Listen] {
				t.Fatalf("ParsePorts(%q) accepted %v twice", env, p)
			}
			names[p.Name], listens[p.Listen] = true, true
			again = append(again, p.Name+":"+strconv.Itoa(p.Listen)+":"+strconv.Itoa(p.App))
		}
		round, err := ParsePorts(strings.Join(again, ","))
		if err != nil || fmt.Sprint(round) != fmt.Sprint(ports) {
			t.Fatalf("ParsePorts(%q) = %v; written out and read again: %v, %v", env, ports, round, err)
		}
	})
}

// FuzzValidPortName holds the agent's own port-name check (it carries no Kubernetes
// library) to the API server's.
func FuzzValidPortName(f *testing.F) {
	for _, seed := range []string{"http", "tp-8080", "8080", "a--b", "-a", "a-", "abcdefghijklmno", "abcdefghijklmnop", "A", "", "a_b", "é"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if got, want := validPortName(name), len(validation.IsValidPortName(name)) == 0; got != want {
			t.Fatalf("validPortName(%q) = %v, the API server says %v", name, got, want)
		}
	})
}
