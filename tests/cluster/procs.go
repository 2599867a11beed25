package cluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// daemon is one long-running component of the cluster.
type daemon struct {
	name  string
	path  string
	args  []string
	env   []string          // added to a clean environment
	files map[string]string // written (relative to the state folder) before it starts
	stop  time.Duration     // how long it gets after SIGTERM before SIGKILL
}

// proc is a started daemon. A recorded pid is trusted only together with the process's start
// time, so a pid that the kernel gave to another process since is never signalled.
type proc struct {
	pid    int
	start  string        // field 22 of /proc/PID/stat
	exited chan struct{} // closed when a daemon started by this process exits
	err    error         // its exit status, once exited
}

func (c *Cluster) pidFile(name string) string { return c.state("pids", name) }

// launch starts d in its own session (it outlives the harness), logging to LogDir/NAME.log,
// and records its pid and start time.
func (c *Cluster) launch(d daemon) (*proc, error) { return c.launchLog(d, os.O_TRUNC) }

// launchLog is launch with the log opened with mode (os.O_TRUNC or os.O_APPEND).
func (c *Cluster) launchLog(d daemon, mode int) (*proc, error) {
	for rel, content := range d.files {
		mode := os.FileMode(0o644)
		if strings.HasPrefix(content, "#!") {
			mode = 0o755
		}
		if err := os.WriteFile(c.state(rel), []byte(content), mode); err != nil {
			return nil, fmt.Errorf("%s: %w", d.name, err)
		}
	}
	if err := os.MkdirAll(c.state("pids"), 0o755); err != nil {
		return nil, fmt.Errorf("%s: %w", d.name, err)
	}
	logFile, err := os.OpenFile(c.logPath(d.name), os.O_CREATE|os.O_WRONLY|mode, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", d.name, err)
	}
	defer logFile.Close()
	cmd := exec.Command(d.path, d.args...)
	cmd.Dir = c.cfg.State
	cmd.Env = append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + c.cfg.State}, d.env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", d.name, err)
	}
	p := &proc{pid: cmd.Process.Pid, exited: make(chan struct{})}
	p.start, _ = startTime(p.pid)
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	record := fmt.Sprintf("%d %s\n", p.pid, p.start)
	if err := os.WriteFile(c.pidFile(d.name), []byte(record), 0o644); err != nil {
		return nil, fmt.Errorf("%s: %w", d.name, err)
	}
	return p, nil
}

func (c *Cluster) logPath(name string) string { return filepath.Join(c.LogDir(), name+".log") }

// recorded reads a daemon's pid file and says whether that very process still runs.
func (c *Cluster) recorded(name string) (pid int, alive bool) {
	data, err := os.ReadFile(c.pidFile(name))
	if err != nil {
		return 0, false
	}
	fields := strings.Fields(string(data))
	if len(fields) != 2 {
		return 0, false
	}
	pid, err = strconv.Atoi(fields[0])
	if err != nil || pid <= 1 {
		return 0, false
	}
	st, err := startTime(pid)
	return pid, err == nil && st == fields[1] && !zombie(pid)
}

// stopRecorded ends a daemon by its recorded pid: SIGTERM, then SIGKILL after grace.
func (c *Cluster) stopRecorded(name string, grace time.Duration) {
	pid, alive := c.recorded(name)
	if alive {
		terminate(pid, grace)
	}
	_ = os.Remove(c.pidFile(name))
}

// terminate sends SIGTERM and waits up to grace for pid to go, then sends SIGKILL.
func terminate(pid int, grace time.Duration) {
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if !running(pid) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	for i := 0; i < 50 && running(pid); i++ {
		time.Sleep(100 * time.Millisecond)
	}
}

func running(pid int) bool {
	return syscall.Kill(pid, 0) == nil && !zombie(pid)
}

// stat returns the fields of /proc/PID/stat after the command name (which may hold spaces):
// index 0 is the state, 1 the parent pid, 19 the start time.
func stat(pid int) ([]string, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return nil, errors.New("malformed stat")
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 20 {
		return nil, errors.New("malformed stat")
	}
	return f, nil
}

func startTime(pid int) (string, error) {
	f, err := stat(pid)
	if err != nil {
		return "", err
	}
	return f[19], nil
}

func zombie(pid int) bool {
	f, err := stat(pid)
	return err == nil && f[0] == "Z"
}

// processes lists every pid with its parent.
func processes() map[int]int {
	parents := map[int]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f, err := stat(pid); err == nil {
			ppid, _ := strconv.Atoi(f[1])
			parents[pid] = ppid
		}
	}
	return parents
}

// descendants returns the pids below root, deepest last.
func descendants(parents map[int]int, root int) []int {
	var out []int
	frontier := []int{root}
	for len(frontier) > 0 {
		var next []int
		for pid, ppid := range parents {
			for _, f := range frontier {
				if ppid == f {
					next = append(next, pid)
				}
			}
		}
		out = append(out, next...)
		frontier = next
	}
	return out
}

func cmdline(pid int) []string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return nil
	}
	return strings.Split(strings.TrimRight(string(data), "\x00"), "\x00")
}
