package client

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tpdev/tp/intercept"
	"github.com/tpdev/tp/remote/laptop/control"
	"github.com/tpdev/tp/remote/tunnel/tunnelpb"
)

func TestPrintIntercepts(t *testing.T) {
	since := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	all := []control.InterceptInfo{{Name: "web-http", Namespace: "ns", Kind: "Deployment", Workload: "web", Port: "http", Client: "laptop", Holder: "alice", Agents: 1, SinceUnix: since.Unix()}}
	refs := []intercept.Ref{{Namespace: "ns", Kind: "StatefulSet", Name: "db"}, {Namespace: "ns", Kind: "Deployment", Name: "web"}}
	var out bytes.Buffer
	if err := printIntercepts(&out, all, refs); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "WORKLOAD") {
		t.Fatalf("tp list:\n%s", out.String())
	}
	if f := strings.Fields(lines[1]); strings.Join(f, " ") != "ns/web Deployment 1 ready web-http http alice (laptop) "+since.Local().Format(time.RFC3339) {
		t.Errorf("the intercepted workload: %q", lines[1])
	}
	if f := strings.Fields(lines[2]); strings.Join(f, " ") != "ns/db StatefulSet yes - - - -" {
		t.Errorf("the workload with the agent only: %q", lines[2])
	}
}

// TestInterceptsKeepTheirJSON: the control socket's intercepts read as they did when they
// were the wire protocol's messages.
func TestInterceptsKeepTheirJSON(t *testing.T) {
	pb := &tunnelpb.InterceptInfo{Name: "n", Namespace: "ns", Kind: "Deployment", Workload: "w", Port: "http", Client: "c", SinceUnix: 7, Agents: 2, Holder: "h", Grant: "g"}
	want, _ := json.Marshal(pb)
	got, _ := json.Marshal(interceptsOf([]*tunnelpb.InterceptInfo{pb})[0])
	if string(got) != string(want) {
		t.Errorf("JSON %s, want %s", got, want)
	}
	if interceptsOf(nil) != nil {
		t.Error("no intercepts became an empty list: JSON null turned []")
	}
}
