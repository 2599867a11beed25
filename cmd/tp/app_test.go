package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/tpdev/tp/cmd/internal/buildinfo"
)

func TestVersionPrintsVersionAndImage(t *testing.T) {
	app := newApp()
	var out bytes.Buffer
	app.Writer = &out
	if err := app.Run([]string{"tp", "version"}); err != nil {
		t.Fatalf("tp version: %v", err)
	}
	for _, want := range []string{"tp " + buildinfo.Version, "cluster image: " + buildinfo.Image} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("tp version printed %q, want it to contain %q", out.String(), want)
		}
	}
}

func TestUnknownCommandFails(t *testing.T) {
	app := newApp()
	var out bytes.Buffer
	app.Writer, app.ErrWriter = &out, &out
	err := app.Run([]string{"tp", "conect"})
	if err == nil || !strings.Contains(err.Error(), `unknown command "conect"`) {
		t.Fatalf("tp conect: got error %v, want one naming the unknown command (output %q)", err, out.String())
	}
}

func TestInterspersedFlags(t *testing.T) {
	app := newApp()
	got := interspersed(app, []string{"tp", "intercept", "web-app", "--port", "8080:80", "-n", "ns", "--dry-run", "--", "sh", "-c", "echo --port"})
	want := []string{"tp", "intercept", "--port", "8080:80", "-n", "ns", "--dry-run", "web-app", "--", "sh", "-c", "echo --port"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("interspersed:\n got %q\nwant %q", got, want)
	}
	if got := interspersed(app, []string{"tp", "run", "--vif=on", "--", "ls", "-l"}); strings.Join(got, " ") != "tp run --vif=on -- ls -l" {
		t.Fatalf("run args changed: %q", got)
	}
}
