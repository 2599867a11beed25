//go:build linux

package ns

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// The test binary re-executes itself as a namespace's first process, the way tp does; these
// variables tell it which part to play.
const (
	childEnv = "TP_NS_MOUNT_CHILD" // JSON childSpec: apply the mounts, then answer requests
	outerEnv = "TP_NS_MOUNT_OUTER" // set: make the namespace from here (an unprivileged uid)
)

type childSpec struct {
	Mounts  []Mount
	Scratch string
}

// request and reply are the lines the test and the child exchange after the mounts.
type request struct{ Op, Path, Data string }

type reply struct {
	Out   string
	Err   string
	Errno int
}

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == ChildArg { // Start's child, as in tp's main
		ChildMain(os.Args[2:])
	}
	if os.Getenv(outerEnv) != "" {
		os.Exit(runOuter())
	}
	if spec := os.Getenv(childEnv); spec != "" {
		os.Exit(runChild(spec))
	}
	os.Exit(m.Run())
}

// nsAttr makes a user + mount namespace mapping the current ids to themselves, with
// CAP_SYS_ADMIN only: what Start gives the child, less the network.
func nsAttr() *syscall.SysProcAttr {
	uid, gid := os.Getuid(), os.Getgid()
	return &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: uid, HostID: uid, Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: gid, HostID: gid, Size: 1}},
		AmbientCaps: []uintptr{unix.CAP_SYS_ADMIN},
		Pdeathsig:   syscall.SIGKILL,
	}
}

// runOuter runs as the unprivileged uid and makes the namespace itself, so that no root
// takes part in it.
func runOuter() int {
	exe, err := os.Executable()
	if err != nil {
		fmt.Println("outer:", err)
		return 2
	}
	cmd := exec.Command(exe)
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, outerEnv+"=") })
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = nsAttr()
	if err := cmd.Run(); err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return exit.ExitCode()
		}
		fmt.Println("outer:", err)
		return 2
	}
	return 0
}

// runChild applies the mounts, says "ready" (or the error), then answers requests.
func runChild(specJSON string) int {
	runtime.LockOSThread()
	var spec childSpec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		fmt.Println("spec:", err)
		return 2
	}
	out := json.NewEncoder(os.Stdout)
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		_ = out.Encode(reply{Err: "making mounts private: " + err.Error()})
		return 3
	}
	if err := applyMounts(spec.Mounts, spec.Scratch); err != nil {
		_ = out.Encode(reply{Err: err.Error()})
		return 3
	}
	_ = out.Encode(reply{Out: "ready"})
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var req request
		if err := json.Unmarshal(in.Bytes(), &req); err != nil {
			fmt.Println("request:", err)
			return 2
		}
		_ = out.Encode(serve(req))
	}
	return 0
}

func serve(req request) reply {
	var out string
	var err error
	switch req.Op {
	case "read":
		var data []byte
		data, err = os.ReadFile(req.Path)
		out = string(data)
	case "write":
		err = os.WriteFile(req.Path, []byte(req.Data), 0o644)
	case "readlink":
		out, err = os.Readlink(req.Path)
	case "ls":
		var entries []os.DirEntry
		entries, err = os.ReadDir(req.Path)
		names := make([]string, len(entries))
		for i, e := range entries {
			names[i] = e.Name()
		}
		out = strings.Join(names, " ")
	case "mode":
		var st fs.FileInfo
		if st, err = os.Stat(req.Path); err == nil {
			out = fmt.Sprintf("%o", st.Mode()&(fs.ModePerm|fs.ModeSticky))
		}
	default:
		err = fmt.Errorf("unknown op %q", req.Op)
	}
	r := reply{Out: out}
	if err != nil {
		r.Err = err.Error()
		var errno syscall.Errno
		if errors.As(err, &errno) {
			r.Errno = int(errno)
		}
	}
	return r
}

// nsChild is a running child, seen from the test.
type nsChild struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *json.Decoder
}

// startChild starts the test binary in a new namespace with spec and returns once its mounts
// are made; setupErr is the child's mount error, if any. With unprivileged, the namespace is
// made by uid and gid 65534 instead.
func startChild(t *testing.T, exe string, spec childSpec, unprivileged bool) (c *nsChild, setupErr string) {
	t.Helper()
	data, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), childEnv+"="+string(data))
	cmd.Stderr = os.Stderr
	if unprivileged {
		cmd.Env = append(cmd.Env, outerEnv+"=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}, Pdeathsig: syscall.SIGKILL}
	} else {
		cmd.SysProcAttr = nsAttr()
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	outPipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Skipf("user namespaces are unavailable here, so the mounts cannot be tried: %v", err)
	}
	c = &nsChild{cmd: cmd, in: in, out: json.NewDecoder(outPipe)}
	t.Cleanup(func() { in.Close(); _ = cmd.Wait() })
	var first reply
	if err := c.out.Decode(&first); err != nil {
		t.Fatalf("the child said nothing: %v", err)
	}
	if first.Out != "ready" {
		return nil, first.Err
	}
	return c, ""
}

func (c *nsChild) do(t *testing.T, op, path, data string) reply {
	t.Helper()
	line, _ := json.Marshal(request{Op: op, Path: path, Data: data})
	if _, err := c.in.Write(append(line, '\n')); err != nil {
		t.Fatalf("%s %s: %v", op, path, err)
	}
	var r reply
	if err := c.out.Decode(&r); err != nil {
		t.Fatalf("%s %s: no answer: %v", op, path, err)
	}
	return r
}

// want checks that op on path inside succeeds with out.
func (c *nsChild) want(t *testing.T, op, path, out string) {
	t.Helper()
	if r := c.do(t, op, path, ""); r.Err != "" || r.Out != out {
		t.Errorf("inside, %s %s = %q, %q; want %q", op, path, r.Out, r.Err, out)
	}
}

// wantErrno checks that op on path inside fails with errno.
func (c *nsChild) wantErrno(t *testing.T, op, path, data string, errno syscall.Errno) {
	t.Helper()
	if r := c.do(t, op, path, data); r.Errno != int(errno) {
		t.Errorf("inside, %s %s = %q, %q; want the error %v", op, path, r.Out, r.Err, errno)
	}
}

func TestMounts(t *testing.T) {
	t.Run("as this user", func(t *testing.T) { testMounts(t, false) })
	t.Run("as nobody", func(t *testing.T) {
		if os.Getuid() != 0 {
			t.Skip("only root can become uid 65534 to start from an unprivileged user; the test above already ran unprivileged")
		}
		testMounts(t, true)
	})
}

// hostTree is the host's side: a workload's files (root), a stand-in for /etc (sys) and
// tp's folder (host).
type hostTree struct{ base, root, sys, host string }

func makeHostTree(t *testing.T, unprivileged bool) hostTree {
	base := t.TempDir()
	// uid 65534 must reach the files: t.TempDir's folders are private.
	for _, d := range []string{filepath.Dir(base), base} {
		must(t, os.Chmod(d, 0o755))
	}
	h := hostTree{base: base, root: filepath.Join(base, "root"), sys: filepath.Join(base, "sys"), host: filepath.Join(base, "host")}
	files := map[string]string{
		"root/etc/web/..2026_1/key": "v1",
		"root/etc/creds/user":       "alice",
		"sys/hosts":                 "hosts of the host",
		"sys/sub/inner":             "inner",
		"sys/mine":                  "mine",
		"sys/web/old":               "hidden by the mount",
	}
	for name, data := range files {
		p := filepath.Join(base, name)
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		must(t, os.WriteFile(p, []byte(data), 0o644))
	}
	must(t, os.Chmod(filepath.Join(base, "sys/mine"), 0o666))
	must(t, os.Chmod(h.sys, 0o750))
	must(t, os.Symlink("..2026_1", filepath.Join(h.root, "etc/web/..data")))
	must(t, os.Symlink("..data/key", filepath.Join(h.root, "etc/web/key")))
	must(t, os.Symlink("hosts", filepath.Join(h.sys, "link")))
	must(t, os.Mkdir(h.host, 0o700))
	if unprivileged {
		must(t, os.Chown(h.host, 65534, 65534))
		must(t, os.Chown(h.sys, 0, 65534)) // readable by nobody's group, writable by root only
	}
	return h
}

// testExe is the test binary, copied where uid 65534 may run it.
func testExe(t *testing.T) string {
	exe, err := os.Executable()
	must(t, err)
	dir := t.TempDir()
	must(t, os.Chmod(filepath.Dir(dir), 0o755))
	must(t, os.Chmod(dir, 0o755))
	data, err := os.ReadFile(exe)
	must(t, err)
	copied := filepath.Join(dir, "ns.test")
	must(t, os.WriteFile(copied, data, 0o755))
	return copied
}

func testMounts(t *testing.T, unprivileged bool) {
	const realTarget = "/var/run/secrets/tp-test" // missing on the host: made under /run
	if _, err := os.Lstat(realTarget); err == nil {
		t.Fatalf("%s exists on this host; the test needs it missing", realTarget)
	}
	h := makeHostTree(t, unprivileged)
	scratch := h.host
	if unprivileged {
		// tp's folder inside the folder that gets a tmpfs: the kept copy is then hidden by
		// the tmpfs and must still be reached.
		scratch = filepath.Join(h.sys, "tp")
		must(t, os.Mkdir(scratch, 0o700))
		must(t, os.Chown(scratch, 65534, 65534))
	}
	web := filepath.Join(h.root, "etc/web")
	// An empty folder over the one that holds every other source, mounted first (it is the
	// shallowest), as a pod's emptyDir at /tmp covers $TP_ROOT: the later sources must
	// still be found.
	empty := filepath.Join(h.base, "empty")
	must(t, os.Mkdir(empty, 0o755))
	spec := childSpec{Scratch: scratch, Mounts: []Mount{
		{Source: empty, Target: h.root},
		{Source: filepath.Join(h.root, "etc/creds/user"), Target: filepath.Join(h.sys, "creds/user"), ReadOnly: true},
		{Source: web, Target: filepath.Join(h.sys, "new/deep/web")},
		{Source: web, Target: filepath.Join(h.sys, "web"), ReadOnly: true},
		{Source: web, Target: realTarget, ReadOnly: true},
	}}
	hostRun, err := os.ReadDir("/run")
	must(t, err)
	sysBefore, err := os.ReadDir(h.sys)
	must(t, err)

	c, setupErr := startChild(t, testExe(t), spec, unprivileged)
	if setupErr != "" {
		t.Fatalf("mounting: %s", setupErr)
	}

	t.Run("a mount over the sources' folder", func(t *testing.T) {
		c.want(t, "ls", h.root, "")
	})
	t.Run("existing folder, read-only", func(t *testing.T) {
		c.want(t, "read", filepath.Join(h.sys, "web/key"), "v1")
		c.wantErrno(t, "write", filepath.Join(h.sys, "web/new"), "x", syscall.EROFS)
		c.wantErrno(t, "read", filepath.Join(h.sys, "web/old"), "", syscall.ENOENT)
	})
	t.Run("missing folder under an existing one", func(t *testing.T) {
		c.want(t, "read", filepath.Join(h.sys, "new/deep/web/key"), "v1")
		c.want(t, "read", filepath.Join(h.sys, "hosts"), "hosts of the host")
		c.want(t, "read", filepath.Join(h.sys, "sub/inner"), "inner")
		c.want(t, "readlink", filepath.Join(h.sys, "link"), "hosts")
		c.want(t, "read", filepath.Join(h.sys, "link"), "hosts of the host")
		c.want(t, "mode", h.sys, "750")
		var names []string
		for _, e := range sysBefore {
			names = append(names, e.Name())
		}
		names = append(names, "creds", "new")
		slices.Sort(names)
		c.want(t, "ls", h.sys, strings.Join(names, " "))
		// Still the host's file, writable as before.
		if r := c.do(t, "write", filepath.Join(h.sys, "mine"), "changed inside"); r.Err != "" {
			t.Errorf("writing a file of the covered folder: %s", r.Err)
		} else if data, _ := os.ReadFile(filepath.Join(h.sys, "mine")); string(data) != "changed inside" {
			t.Errorf("the host's file holds %q after a write inside", data)
		}
		if unprivileged {
			// The folder was not the user's to write to; the tmpfs keeps it so.
			c.wantErrno(t, "write", filepath.Join(h.sys, "added"), "x", syscall.EROFS)
		}
	})
	t.Run("single file onto a missing path", func(t *testing.T) {
		c.want(t, "read", filepath.Join(h.sys, "creds/user"), "alice")
		c.wantErrno(t, "write", filepath.Join(h.sys, "creds/user"), "bob", syscall.EROFS)
	})
	t.Run("real system folder through a symlink", func(t *testing.T) {
		c.want(t, "read", realTarget+"/key", "v1")
		var names []string
		for _, e := range hostRun {
			names = append(names, e.Name())
		}
		names = append(names, "secrets")
		slices.Sort(names)
		c.want(t, "ls", "/run", strings.Join(names, " "))
		for _, e := range hostRun {
			if e.Type()&fs.ModeSymlink != 0 {
				link, err := os.Readlink(filepath.Join("/run", e.Name()))
				must(t, err)
				c.want(t, "readlink", filepath.Join("/run", e.Name()), link)
			}
		}
	})
	t.Run("update in the source shows", func(t *testing.T) {
		// What the kubelet does: a new timestamped folder, then ..data swapped by rename.
		must(t, os.Mkdir(filepath.Join(web, "..2026_2"), 0o755))
		must(t, os.WriteFile(filepath.Join(web, "..2026_2/key"), []byte("v2"), 0o644))
		must(t, os.Symlink("..2026_2", filepath.Join(web, "..data_tmp")))
		must(t, os.Rename(filepath.Join(web, "..data_tmp"), filepath.Join(web, "..data")))
		c.want(t, "read", filepath.Join(h.sys, "web/key"), "v2")
		c.want(t, "read", filepath.Join(h.sys, "new/deep/web/key"), "v2")
		c.want(t, "read", realTarget+"/key", "v2")
	})
	t.Run("host unchanged", func(t *testing.T) {
		for _, p := range []string{"/run/secrets", filepath.Join(h.sys, "new"), filepath.Join(h.sys, "creds"), filepath.Join(h.sys, "added")} {
			if _, err := os.Lstat(p); err == nil {
				t.Errorf("%s appeared on the host", p)
			}
		}
		if entries, _ := os.ReadDir(scratch); len(entries) != 0 {
			t.Errorf("tp's folder keeps %d entries after the mounts", len(entries))
		}
	})
}

func TestMountRefusesKernelTrees(t *testing.T) {
	h := makeHostTree(t, false)
	for _, target := range []string{"/proc/x", "/sys", "/dev/tp", "/"} {
		spec := childSpec{Scratch: h.host, Mounts: []Mount{{Source: filepath.Join(h.root, "etc/web"), Target: target}}}
		c, setupErr := startChild(t, testExe(t), spec, false)
		if c != nil || !strings.Contains(setupErr, "refusing") || !strings.Contains(setupErr, "at "+target+":") {
			t.Errorf("mounting at %s: error %q; want a refusal naming the mount", target, setupErr)
		}
	}
}

func TestMountsFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mounts.json")
	mounts := []Mount{{Source: "/a/b", Target: "/etc/web", ReadOnly: true}}
	must(t, writeMounts(path, mounts))
	got, err := readMounts(path)
	if err != nil || !slices.Equal(got, mounts) {
		t.Errorf("readMounts = %v, %v; want %v", got, err, mounts)
	}
	must(t, writeMounts(path, nil))
	if got, err := readMounts(path); err != nil || len(got) != 0 {
		t.Errorf("readMounts of no mounts = %v, %v", got, err)
	}
	must(t, os.WriteFile(path, []byte(`[{"Source":"/a","Target":"/b","Mode":"rw"}]`), 0o600))
	if _, err := readMounts(path); err == nil {
		t.Error("readMounts accepted an unknown field")
	}
	if err := writeMounts(path, []Mount{{Source: "/a", Target: "/proc/self"}}); err == nil {
		t.Error("writeMounts accepted /proc/self")
	}
	if err := writeMounts(path, []Mount{{Source: "a", Target: "/etc/a"}}); err == nil {
		t.Error("writeMounts accepted a relative source")
	}
}

func TestSortedMounts(t *testing.T) {
	got := sortedMounts([]Mount{{Target: "/a/b/c"}, {Target: "/a/"}, {Target: "/x/y"}, {Target: "/a/b"}})
	var targets []string
	for _, m := range got {
		targets = append(targets, m.Target)
	}
	if want := []string{"/a", "/x/y", "/a/b", "/a/b/c"}; !slices.Equal(targets, want) {
		t.Errorf("sortedMounts = %v; want %v", targets, want)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestStartMounts goes through Start and ChildMain, as tp run does: a volume at a missing
// path under the real /etc, where tp's resolv.conf is mounted too.
func TestStartMounts(t *testing.T) {
	if err := Supported(); err != nil {
		t.Skipf("the namespace cannot be made here: %v", err)
	}
	const target = "/etc/tp-test-mounts/web"
	if _, err := os.Lstat(filepath.Dir(target)); err == nil {
		t.Fatalf("%s exists on this host; the test needs it missing", filepath.Dir(target))
	}
	h := makeHostTree(t, false)
	run := func(mounts []Mount, script string) (string, error) {
		link := Link{Name: "tp0", Addr: netip.MustParseAddr("10.0.0.2"), MTU: 1500, Resolv: "nameserver 10.0.0.1\n", HostDir: h.host, Mounts: mounts}
		out, err := os.Create(filepath.Join(t.TempDir(), "out"))
		must(t, err)
		defer out.Close()
		cmd, err := Start(link, []string{"sh", "-c", script}, os.Environ(), nil, out, os.Stderr)
		if err != nil {
			return "", err
		}
		cmd.TUN.Close()
		must(t, cmd.Release())
		if err := cmd.Cmd.Wait(); err != nil {
			return "", fmt.Errorf("the command: %w", err)
		}
		data, err := os.ReadFile(out.Name())
		return string(data), err
	}
	script := "cat " + target + "/key; echo; cat /etc/resolv.conf; { echo x > " + target + "/new; } 2>/dev/null || echo read-only"
	got, err := run([]Mount{{Source: filepath.Join(h.root, "etc/web"), Target: target, ReadOnly: true}}, script)
	if want := "v1\nnameserver 10.0.0.1\nread-only\n"; err != nil || got != want {
		t.Errorf("inside: %q, %v; want %q", got, err, want)
	}
	missing := filepath.Join(h.root, "nothing")
	_, err = run([]Mount{{Source: missing, Target: target}}, "true")
	if err == nil || !strings.Contains(err.Error(), "mount "+missing+" at "+target+": source:") {
		t.Errorf("a missing source: error %v; want one naming the mount and its source", err)
	}
	if _, err := os.Lstat(filepath.Dir(target)); err == nil {
		t.Errorf("%s appeared on the host", filepath.Dir(target))
	}
}

// A mount needs a folder to lay its parents' tmpfs on (a new folder right under / has
// none), and a target of its own kind.
func TestPlaceable(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	must(t, os.WriteFile(file, nil, 0o644))
	for _, tc := range []struct {
		source, target, want string
	}{
		{dir, filepath.Join(dir, "new", "deep"), ""},
		{dir, "/etc/tp-placeable-test/conf", ""},
		{file, filepath.Join(dir, "new-file"), ""},
		{dir, "/tp-placeable-test-nothing", "a new folder right under / cannot be made"},
		{dir, "/tp-placeable-test-nothing/a/b", "a new folder right under / cannot be made"},
		{dir, "/proc/tp", "the kernel's own tree"},
		{dir, "/", "refusing to hide the whole file system"},
		{dir, "relative/path", "want an absolute path"},
		{file, dir, "is a directory but the source is a file"},
		{dir, file, "is a file but the source is a directory"},
		{filepath.Join(dir, "nothing"), file, "mount source"},
	} {
		err := Placeable(Mount{Source: tc.source, Target: tc.target})
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("Placeable(%s at %s): %v, want %q", tc.source, tc.target, err, tc.want)
		}
	}
}
