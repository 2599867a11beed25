package client

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"

	"github.com/tpdev/tp/remote"
)

// ExitError carries the exit status (or deadly signal) of the command tp ran out of tp
// run and tp intercept -- CMD: tp exits the same way.
type ExitError struct {
	Code   int
	Signal os.Signal // nil unless a signal ended the command
}

func (e *ExitError) Error() string { return fmt.Sprintf("the command exited with status %d", e.Code) }

// startCommand starts args with env and stdio; a command that cannot start is the user's
// to fix (a typo, a missing program).
func startCommand(args, env []string, stdio Stdio) (*exec.Cmd, error) {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdio.In, stdio.Out, stdio.Err
	if err := cmd.Start(); err != nil {
		return nil, remote.Errorf(remote.Usage, "running %s: %v", args[0], err)
	}
	return cmd, nil
}

// abort ends a started command whose setting up failed, and returns err: the command
// must not outlive tp, nor stay a zombie.
func abort(cmd *exec.Cmd, err error) error {
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	return err
}

// waitCommand waits for the command, passing on the signals tp receives, and returns its
// exit status as an *ExitError.
func waitCommand(cmd *exec.Cmd) error {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, forwardedSignals...)
	defer signal.Stop(sigs)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for {
		select {
		case sig := <-sigs:
			_ = cmd.Process.Signal(sig)
		case err := <-done:
			return exitError(err)
		}
	}
}

// exitError is how the command's end (Wait's error) reaches tp's exit.
func exitError(err error) error {
	var ee *exec.ExitError
	if err == nil {
		return nil
	}
	if !errors.As(err, &ee) {
		return err
	}
	if sig := exitSignal(ee); sig != nil {
		return &ExitError{Code: 128 + signalNumber(sig), Signal: sig}
	}
	return &ExitError{Code: ee.ExitCode()}
}
