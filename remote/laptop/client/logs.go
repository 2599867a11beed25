package client

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/tpdev/tp/remote/laptop/control"
)

// The daemon's log, daemon.log in the session's folder, is kept across connects: each
// connect moves it to daemon.log.1 (and .1 to .2, up to logKeep old files), and while the
// daemon runs, a log past logMaxSize is moved aside the same way.
const (
	logMaxSize = 10 << 20
	logKeep    = 3
)

// oldLog is the path of the n-th older log (path itself for 0).
func oldLog(path string, n int) string {
	if n == 0 {
		return path
	}
	return fmt.Sprintf("%s.%d", path, n)
}

// shiftOldLogs makes room for a new path.1: path.keep goes, path.N becomes path.N+1.
func shiftOldLogs(path string, keep int) {
	_ = os.Remove(oldLog(path, keep))
	for n := keep - 1; n >= 1; n-- {
		_ = os.Rename(oldLog(path, n), oldLog(path, n+1))
	}
}

// openDaemonLog moves the session's last log aside and opens a new one, for appending: the
// daemon's stdout and stderr, and what its bounded writer (sizeCapped) truncates. A log
// that cannot be moved (Windows, where another process still has it open) is appended to.
func openDaemonLog(path string) (*os.File, error) {
	if fi, err := os.Stat(path); err == nil && fi.Size() > 0 {
		shiftOldLogs(path, logKeep)
		_ = os.Rename(path, oldLog(path, 1))
	}
	return os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
}

// sizeCapped is the daemon's log writer. It writes to w, the daemon's stderr, which is the
// file at path opened for appending; once the file passes max bytes, it copies it to
// path.1 (the older ones shifted, keep of them kept) and truncates it. The file stays the
// one stderr is: a panic's trace, and whatever else writes to stderr (client-go's klog),
// still land in the current log, and their bytes count towards max (the file's own size
// is what is checked).
type sizeCapped struct {
	mu   sync.Mutex
	w    io.Writer
	path string
	max  int64
	keep int
}

func (s *sizeCapped) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, err := s.w.Write(p)
	if fi, serr := os.Stat(s.path); serr == nil && fi.Size() >= s.max {
		_ = s.rotate()
	}
	return n, err
}

// rotate copies the log to path.1 and empties it; appends then start again at its
// beginning. What others write between the copy and the truncation is lost.
func (s *sizeCapped) rotate() error {
	shiftOldLogs(s.path, s.keep)
	if err := copyFile(s.path, oldLog(s.path, 1)); err != nil {
		return err
	}
	return os.Truncate(s.path, 0)
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	return errors.Join(err, out.Close())
}

// daemonLog is the daemon's bounded log writer and the log's path, when its stderr is the
// session's log (spawnDaemon's doing); ok is false otherwise (tp connect --foreground logs
// to the terminal, and keeps it).
func daemonLog(name string) (w io.Writer, path string, ok bool) {
	path, err := control.LogPath(name)
	if err != nil {
		return nil, "", false
	}
	logged, err := os.Stat(path)
	if err != nil {
		return nil, "", false
	}
	stderr, err := os.Stderr.Stat()
	if err != nil || !os.SameFile(logged, stderr) {
		return nil, "", false
	}
	return &sizeCapped{w: os.Stderr, path: path, max: logMaxSize, keep: logKeep}, path, true
}
