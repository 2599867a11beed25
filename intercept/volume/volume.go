// Package volume holds the files a container sees in its volumes (a Tree, which package
// intercept computes from a pod as the kubelet does) and writes them under a root folder,
// each mount at its mountPath, the way the kubelet's atomic writer does: a reader of a
// mount sees the old files or the new ones, never half an update.
//
// Layout of a mount folder, as the kubelet's (pkg/volume/util/atomic_writer.go):
//
//	MOUNT/..2026_12_06_22_30_00.123456789/   the files of one version
//	MOUNT/..data -> ..2026_12_06_22_30_00.123456789
//	MOUNT/NAME -> ..data/NAME                 one link per top-level name
//
// An update writes a new version folder, points a fresh link at it and renames that link
// over ..data (one atomic rename), then adds and removes the top-level links and removes
// the old version.
package volume

import (
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// File is one file of a mount.
type File struct {
	// Path is relative to the mount, with slashes; "" when the mount is this one file
	// (a subPath naming a file).
	Path string
	Data []byte
	Mode fs.FileMode
}

// Mount is what a container sees at one of its volume mounts.
type Mount struct {
	// Path is the container's mountPath.
	Path   string
	Volume string
	// Kind is the volume's type as the pod spec names it: configMap, secret, ...
	Kind string
	// ReadOnly mounts get read-only folders (the files keep their modes: an app may check
	// them, as ssh does a key's).
	ReadOnly bool
	// SubPath is set when the mount shows part of the volume. The kubelet never updates
	// such a mount after the container starts, so neither does WriteTo.
	SubPath string
	// Scratch is a writable empty folder (emptyDir): made once, never replaced.
	Scratch bool
	Files   []File
}

// Tree is every mount of a container whose files tp writes.
type Tree struct {
	Mounts []Mount
	// Renew is when the tree should be computed again at the latest: the kubelet renews a
	// projected service-account token at 80% of its life. Zero when nothing expires.
	Renew time.Time
}

// Report says what was done about one volume mount of the container, for people.
type Report struct {
	Volume    string `json:"volume"`
	Kind      string `json:"kind"`
	MountPath string `json:"mountPath"`
	Done      string `json:"done"`
	// Warning is set when the container's world differs from the pod's here (a volume not
	// mounted, a projection tp cannot make).
	Warning bool `json:"warning,omitempty"`
}

// WriteTo writes t under root, each mount at root + its mountPath. Called again with a
// newer tree it updates the mounts in place (atomically per mount) and removes the files
// the new tree no longer has. Parents are written before the mounts nested in them.
func (t *Tree) WriteTo(root string) error {
	mounts := slices.Clone(t.Mounts)
	slices.SortStableFunc(mounts, func(a, b Mount) int {
		return strings.Count(path.Clean(a.Path), "/") - strings.Count(path.Clean(b.Path), "/")
	})
	for _, m := range mounts {
		dir, err := under(root, m.Path)
		if err != nil {
			return fmt.Errorf("volume %s: %w", m.Volume, err)
		}
		for _, f := range m.Files {
			if f.Path != "" && !filepath.IsLocal(filepath.FromSlash(f.Path)) || f.Path == "" && (m.SubPath == "" || len(m.Files) != 1) {
				return fmt.Errorf("volume %s: file path %q is not inside its mount %s", m.Volume, f.Path, m.Path)
			}
		}
		if err := unshadow(root, dir); err != nil {
			return fmt.Errorf("volume %s: %w", m.Volume, err)
		}
		switch {
		case m.Scratch && m.ReadOnly:
			if err = mkdirAll(dir); err == nil {
				err = os.Chmod(dir, dirMode&^0o222)
			}
		case m.Scratch:
			err = mkdirAll(dir)
		case m.SubPath != "":
			err = writeOnce(dir, m)
		default:
			err = writeAtomic(dir, m)
		}
		if err != nil {
			return fmt.Errorf("volume %s at %s: %w", m.Volume, m.Path, err)
		}
	}
	return nil
}

// Remove removes a root WriteTo wrote, read-only folders included (os.RemoveAll cannot
// empty those unless run as root): what tp run does with its temporary root on exit.
func Remove(root string) error {
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, dirMode)
		}
		return nil
	})
	return os.RemoveAll(root)
}

// unshadow removes the links of an outer mount on the way from root to dir: a mount nested in
// another covers the outer volume's file of that name, as a bind mount would, rather than
// being written into the outer volume's version folder.
func unshadow(root, dir string) error {
	rel, err := filepath.Rel(root, dir)
	if err != nil {
		return err
	}
	p := root
	for _, part := range strings.Split(rel, string(filepath.Separator)) {
		p = filepath.Join(p, part)
		target, err := os.Readlink(p)
		if err != nil {
			continue // not a link, or not there yet
		}
		if strings.HasPrefix(target, dataLink+"/") {
			if err := os.Remove(p); err != nil {
				return err
			}
		}
	}
	return nil
}

// under is mountPath's place under root.
func under(root, mountPath string) (string, error) {
	rel := filepath.FromSlash(strings.TrimLeft(path.Clean("/"+mountPath), "/"))
	if rel == "" || !filepath.IsLocal(rel) {
		return "", fmt.Errorf("mount path %q is not a folder tp can write under its root", mountPath)
	}
	return filepath.Join(root, rel), nil
}
