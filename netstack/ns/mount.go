package ns

import (
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
)

// Mount shows a host path at another path inside the namespace: the way a container's
// volume files, written on the host, reach the command at their mountPath.
type Mount struct {
	Source   string // host path: a directory (later updates in it show) or a single file
	Target   string // absolute path inside the namespace
	ReadOnly bool
}

// checkMount refuses what can never be mounted, before any process is started.
func checkMount(m Mount) error {
	if !filepath.IsAbs(m.Source) {
		return fmt.Errorf("mount source %q: want an absolute path", m.Source)
	}
	return checkTarget(m.Target)
}

// checkTarget refuses relative targets, the root and the kernel's trees.
func checkTarget(target string) error {
	if !filepath.IsAbs(target) {
		return fmt.Errorf("mount target %q: want an absolute path", target)
	}
	target = filepath.Clean(target)
	if target == "/" {
		return errors.New("mount target /: refusing to hide the whole file system")
	}
	// The kernel's own views: a volume laid over them would hide the system rather than
	// add files to it.
	for _, tree := range []string{"/proc", "/sys", "/dev"} {
		if target == tree || strings.HasPrefix(target, tree+"/") {
			return fmt.Errorf("mount target %s: refusing to mount under %s, the kernel's own tree", target, tree)
		}
	}
	return nil
}

// sortedMounts returns mounts with clean targets, parents before children, so that a
// mount inside another's target lands on top of it rather than under it.
func sortedMounts(mounts []Mount) []Mount {
	out := make([]Mount, len(mounts))
	for i, m := range mounts {
		m.Target = filepath.Clean(m.Target)
		out[i] = m
	}
	depth := func(p string) int { return strings.Count(p, "/") }
	sort.SliceStable(out, func(i, j int) bool {
		return depth(out[i].Target) < depth(out[j].Target)
	})
	return out
}
