//go:build linux

package ns

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// mounter lays Mounts into this (private) mount namespace without touching the host: a
// missing target is made in a tmpfs laid over its deepest existing folder, never on disk.
type mounter struct {
	scratch string          // host folder for transient mount points, e.g. Link.HostDir
	ours    map[uint64]bool // devices of the tmpfs laid over folders: free to create in
	seal    []string        // those tmpfs whose folder this user could not write to
}

// applyMounts makes each mount, parents first, then makes the tmpfs read-only where the
// folders they replaced were not writable, so that only the mounts are new.
func applyMounts(mounts []Mount, scratch string) error {
	// The sources and the scratch folder are held open before the first mount, and reached
	// through their descriptors: a mount over a folder that holds them (an emptyDir at /tmp,
	// where $TP_ROOT and tp's folder usually live) would hide their paths.
	sd, err := unix.Open(scratch, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("tp's folder %s: %w", scratch, err)
	}
	defer unix.Close(sd)
	m := &mounter{scratch: fdPath(sd), ours: map[uint64]bool{}}
	sorted := sortedMounts(mounts)
	held := make([]Mount, len(sorted))
	for i, mt := range sorted {
		if err := checkMount(mt); err != nil {
			return fmt.Errorf("mount %s at %s: %w", mt.Source, mt.Target, err)
		}
		fd, err := unix.Open(mt.Source, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("mount %s at %s: source: %w", mt.Source, mt.Target, err)
		}
		defer unix.Close(fd)
		held[i] = mt
		held[i].Source = fdPath(fd)
	}
	for i, mt := range held {
		if err := m.mount(mt); err != nil {
			return fmt.Errorf("mount %s at %s: %w", sorted[i].Source, mt.Target, err)
		}
	}
	for _, dir := range m.seal {
		if err := remountReadOnly(dir); err != nil {
			return fmt.Errorf("keeping %s read-only: %w", dir, err)
		}
	}
	return nil
}

// fdPath names an open file by its descriptor, whatever is mounted over its path since.
func fdPath(fd int) string { return fmt.Sprintf("/proc/self/fd/%d", fd) }

func (m *mounter) mount(mt Mount) error {
	if err := checkMount(mt); err != nil {
		return err
	}
	src, err := os.Stat(mt.Source)
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	existing, missing, err := resolveTarget(mt.Target)
	if err != nil {
		return err
	}
	// The target may resolve, through symlinks, into a tree that checkMount refused.
	if err := checkTarget(existing); err != nil {
		return err
	}
	target := existing
	if len(missing) > 0 {
		if target, err = m.create(existing, missing, src.IsDir()); err != nil {
			return err
		}
	} else if err := sameKind(existing, src.IsDir()); err != nil {
		return err
	}
	return bind(mt.Source, target, mt.ReadOnly)
}

// Placeable says whether m can be made in the namespace: not when it is
// refused outright, nor when it is a new folder right under / (that would take laying a
// tmpfs over the whole file system). The caller leaves such a mount out and says so.
func Placeable(m Mount) error {
	if err := checkMount(m); err != nil {
		return err
	}
	existing, missing, err := resolveTarget(filepath.Clean(m.Target))
	if err != nil {
		return err
	}
	if err := checkTarget(existing); err != nil && existing != "/" {
		return err
	}
	if existing == "/" && len(missing) > 0 {
		return fmt.Errorf("mount target %s: a new folder right under / cannot be made without hiding the whole file system", m.Target)
	}
	if len(missing) == 0 {
		// A folder cannot be shown where a file is, nor a file where a folder is.
		src, err := os.Stat(m.Source)
		if err != nil {
			return fmt.Errorf("mount source: %w", err)
		}
		return sameKind(existing, src.IsDir())
	}
	return nil
}

// resolveTarget splits target into its deepest existing ancestor, symlinks resolved (the
// folder that must change), and the names missing below it.
func resolveTarget(target string) (string, []string, error) {
	var missing []string
	for p := target; ; p = filepath.Dir(p) {
		real, err := filepath.EvalSymlinks(p)
		if err == nil {
			return real, missing, nil
		}
		if !errors.Is(err, fs.ErrNotExist) || p == "/" {
			return "", nil, fmt.Errorf("resolving %s: %w", p, err)
		}
		missing = append([]string{filepath.Base(p)}, missing...)
	}
}

func sameKind(target string, dir bool) error {
	st, err := os.Stat(target)
	if err != nil {
		return fmt.Errorf("target: %w", err)
	}
	switch {
	case dir && !st.IsDir():
		return fmt.Errorf("target %s is a file but the source is a directory", target)
	case !dir && st.IsDir():
		return fmt.Errorf("target %s is a directory but the source is a file", target)
	}
	return nil
}

// create makes the missing names below parent, in a tmpfs laid over parent unless parent
// already lies in one of ours, and returns the new mount point.
func (m *mounter) create(parent string, missing []string, dir bool) (string, error) {
	var st unix.Stat_t
	if err := unix.Stat(parent, &st); err != nil {
		return "", fmt.Errorf("stat %s: %w", parent, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return "", fmt.Errorf("%s is not a directory", parent)
	}
	if !m.ours[st.Dev] {
		if err := m.overlay(parent); err != nil {
			return "", err
		}
	}
	target := filepath.Join(append([]string{parent}, missing...)...)
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return "", fmt.Errorf("making %s in the namespace: %w", filepath.Dir(target), err)
	}
	if dir {
		if err := os.Mkdir(target, 0o755); err != nil {
			return "", fmt.Errorf("making %s in the namespace: %w", target, err)
		}
		return target, nil
	}
	if err := touch(target); err != nil {
		return "", err
	}
	return target, nil
}

// overlay replaces dir by a tmpfs that shows the same entries (each bound from the
// original, its submounts with it; symlinks copied), so that names can be added to dir in
// this namespace only.
func (m *mounter) overlay(dir string) error {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return fmt.Errorf("stat %s: %w", dir, err)
	}
	// Asked before the tmpfs hides the folder; a root-owned folder stays closed to the user.
	writable := unix.Access(dir, unix.W_OK) == nil
	keep, err := os.MkdirTemp(m.scratch, "keep-")
	if err != nil {
		return fmt.Errorf("keeping %s: %w", dir, err)
	}
	defer os.Remove(keep)
	if err := unix.Mount(dir, keep, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("keeping %s at %s: %w", dir, keep, err)
	}
	// The descriptor reaches the kept copy even when keep itself lies under dir and the
	// tmpfs hides it.
	fd, err := unix.Open(keep, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		_ = unix.Unmount(keep, unix.MNT_DETACH)
		return fmt.Errorf("opening the copy of %s: %w", dir, err)
	}
	defer unix.Close(fd)
	from := fmt.Sprintf("/proc/self/fd/%d", fd)
	if err := m.laytmpfs(dir, st.Mode&0o7777); err != nil {
		_ = unix.Unmount(keep, unix.MNT_DETACH)
		return err
	}
	if err := recreate(from, dir); err != nil {
		return err
	}
	// The copy is no longer needed; the command should not find it under HostDir. Through
	// the descriptor: keep's path may now lead into the tmpfs instead.
	if err := unix.Unmount(from, unix.MNT_DETACH); err != nil {
		return fmt.Errorf("releasing the copy of %s at %s: %w", dir, keep, err)
	}
	if !writable {
		m.seal = append(m.seal, dir)
	}
	return nil
}

func (m *mounter) laytmpfs(dir string, mode uint32) error {
	opts := fmt.Sprintf("mode=%o", mode)
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		return fmt.Errorf("laying a tmpfs over %s: %w", dir, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return fmt.Errorf("stat %s: %w", dir, err)
	}
	m.ours[st.Dev] = true
	return nil
}

// recreate shows every entry of the folder from in the folder to.
func recreate(from, to string) error {
	entries, err := os.ReadDir(from)
	if err != nil {
		return fmt.Errorf("listing %s: %w", to, err)
	}
	for _, e := range entries {
		src, dst := filepath.Join(from, e.Name()), filepath.Join(to, e.Name())
		if err := recreateEntry(src, dst, e.Type()); err != nil {
			return err
		}
	}
	return nil
}

func recreateEntry(src, dst string, typ fs.FileMode) error {
	switch {
	case typ&fs.ModeSymlink != 0:
		link, err := os.Readlink(src)
		if err != nil {
			return fmt.Errorf("reading the symlink %s: %w", dst, err)
		}
		if err := os.Symlink(link, dst); err != nil {
			return fmt.Errorf("recreating the symlink %s: %w", dst, err)
		}
		return nil
	case typ.IsDir():
		if err := os.Mkdir(dst, 0o755); err != nil {
			return fmt.Errorf("recreating %s: %w", dst, err)
		}
	default: // files, sockets, fifos, devices: an empty file is their mount point
		if err := touch(dst); err != nil {
			return err
		}
	}
	if err := unix.Mount(src, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("recreating %s: %w", dst, err)
	}
	return nil
}

func touch(path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("making %s in the namespace: %w", path, err)
	}
	return f.Close()
}

// bind shows src at dst, recursively so that mounts under src come along.
func bind(src, dst string, readOnly bool) error {
	if err := unix.Mount(src, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind-mounting: %w", err)
	}
	if readOnly {
		if err := remountReadOnly(dst); err != nil {
			return fmt.Errorf("making it read-only: %w", err)
		}
	}
	return nil
}

// remountReadOnly keeps the mount's other flags: in a user namespace, the kernel refuses a
// remount that would clear nosuid, nodev, noexec or atime flags set by the host.
func remountReadOnly(dir string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("statfs %s: %w", dir, err)
	}
	flags := uintptr(unix.MS_REMOUNT | unix.MS_BIND | unix.MS_RDONLY)
	for stFlag, msFlag := range map[int64]uintptr{
		unix.ST_NOSUID: unix.MS_NOSUID, unix.ST_NODEV: unix.MS_NODEV, unix.ST_NOEXEC: unix.MS_NOEXEC,
		unix.ST_NOATIME: unix.MS_NOATIME, unix.ST_NODIRATIME: unix.MS_NODIRATIME, unix.ST_RELATIME: unix.MS_RELATIME,
	} {
		if int64(st.Flags)&stFlag != 0 {
			flags |= msFlag
		}
	}
	return unix.Mount("", dir, "", flags, "")
}

// readMounts reads the mounts Start wrote for the child, refusing anything unexpected.
func readMounts(path string) ([]Mount, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading the mounts: %w", err)
	}
	defer f.Close()
	dec := json.NewDecoder(f)
	dec.DisallowUnknownFields()
	var mounts []Mount
	if err := dec.Decode(&mounts); err != nil {
		return nil, fmt.Errorf("reading the mounts from %s: %w", path, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("reading the mounts from %s: trailing data", path)
	}
	return mounts, nil
}

// writeMounts checks mounts and writes them where the child reads them.
func writeMounts(path string, mounts []Mount) error {
	for _, m := range mounts {
		if err := checkMount(m); err != nil {
			return err
		}
	}
	if mounts == nil {
		mounts = []Mount{}
	}
	data, err := json.Marshal(mounts)
	if err != nil {
		return fmt.Errorf("writing the mounts: %w", err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("writing the mounts: %w", err)
	}
	return nil
}
