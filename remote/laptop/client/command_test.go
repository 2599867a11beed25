package client

import (
	"errors"
	"os/exec"
	"runtime"
	"testing"
	"time"
)

func TestAbortKillsAndReaps(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("needs sleep")
	}
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Skip(err)
	}
	want := errors.New("setting up failed")
	start := time.Now()
	if err := abort(cmd, want); err != want {
		t.Errorf("abort returned %v, want the setup's error", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("abort took %s: the command was not killed", took)
	}
	if cmd.ProcessState == nil {
		t.Error("abort did not wait for the command: it stays a zombie")
	}
}

func TestExitError(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("needs sh")
	}
	if err := exitError(exec.Command("sh", "-c", "exit 0").Run()); err != nil {
		t.Errorf("exit 0: %v", err)
	}
	err := exitError(exec.Command("sh", "-c", "exit 3").Run())
	if ee, ok := errors.AsType[*ExitError](err); !ok || ee.Code != 3 || ee.Signal != nil {
		t.Errorf("exit 3: %#v", err)
	}
	err = exitError(exec.Command("sh", "-c", "kill -TERM $$").Run())
	if ee, ok := errors.AsType[*ExitError](err); !ok || ee.Code != 128+15 || ee.Signal == nil {
		t.Errorf("killed by SIGTERM: %#v, want status 143 and the signal", err)
	}
	other := errors.New("wait failed")
	if err := exitError(other); err != other {
		t.Errorf("another error: %v", err)
	}
}

func TestStartCommandThatCannotStart(t *testing.T) {
	_, err := startCommand([]string{"/no/such/program"}, nil, Stdio{})
	if err == nil || exitCode(err) != 2 {
		t.Errorf("%v, want a user error", err)
	}
}
