package control

import (
	"context"
	"errors"
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/tpdev/tp/remote/laptop/session"
)

// serve runs a daemon's API on a session named name until the test ends.
func serve(t *testing.T, name string, api API) {
	t.Helper()
	// Unix socket paths are short: keep TP_HOME near the root.
	home, err := os.MkdirTemp("", "tp")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("TP_HOME", home)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, name, api) }()
	t.Cleanup(func() {
		cancel()
		<-done
		_ = os.RemoveAll(home)
	})
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := Status(t.Context(), name); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the daemon never answered")
		}
	}
}

func TestInterceptsOverTheSocket(t *testing.T) {
	want := Intercepts{
		Held: []session.InterceptSpec{{Name: "web-http", Namespace: "ns", Kind: "Deployment", Workload: "web", Port: "http", Local: "127.0.0.1:8080"}},
		All:  []InterceptInfo{{Name: "web-http", Namespace: "ns", Kind: "Deployment", Workload: "web", Port: "http", Client: "c", SinceUnix: 7, Agents: 1, Holder: "alice", Grant: "g"}},
	}
	var asked session.InterceptSpec
	serve(t, "s", API{
		Info: func() Info { return Info{Name: "s"} },
		List: func(_ context.Context, ns string) (Intercepts, error) {
			if ns != "ns" {
				return Intercepts{}, errors.New("wrong namespace " + ns)
			}
			return want, nil
		},
		Intercept: func(_ context.Context, spec session.InterceptSpec) (session.Held, error) {
			asked = spec
			return session.Held{Agents: 2, Overlap: "x"}, nil
		},
		Leave: func(name string) error {
			if name != "web-http" {
				return errors.New("no intercept " + name)
			}
			return nil
		},
	})
	got, err := ListIntercepts(t.Context(), "s", "ns")
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("ListIntercepts: %+v, %v; want %+v", got, err, want)
	}
	if _, err := ListIntercepts(t.Context(), "s", "other"); err == nil || err.Error() != "wrong namespace other" {
		t.Errorf("a failed list: %v, want the daemon's error", err)
	}
	if held, err := Intercept(t.Context(), "s", want.Held[0]); held.Agents != 2 || held.Overlap != "x" || err != nil || asked != want.Held[0] {
		t.Errorf("Intercept: %+v, %v (asked %+v)", held, err, asked)
	}
	if err := Leave(t.Context(), "s", "web-http"); err != nil {
		t.Errorf("Leave: %v", err)
	}
	if err := Leave(t.Context(), "s", "nope"); err == nil {
		t.Error("leaving an unknown intercept succeeded")
	}
	if _, err := Status(t.Context(), "none"); !errors.Is(err, ErrNotRunning) {
		t.Errorf("a session that does not run: %v", err)
	}
}
