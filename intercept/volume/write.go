package volume

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"
)

const (
	dataLink = "..data"
	// dirMode is every folder's mode; read-only mounts lose the write bits once written.
	dirMode = 0o755
)

func mkdirAll(dir string) error { return os.MkdirAll(dir, dirMode) }

// writeAtomic writes m's files into a new version folder of dir and swaps ..data to it.
func writeAtomic(dir string, m Mount) error {
	if err := mkdirAll(dir); err != nil {
		return err
	}
	old, err := os.Readlink(filepath.Join(dir, dataLink))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if old != "" && same(filepath.Join(dir, old), m.Files) {
		return nil // an unchanged volume keeps its version, as the kubelet's does
	}
	version, err := os.MkdirTemp(dir, time.Now().UTC().Format("..2006_01_02_15_04_05."))
	if err != nil {
		return err
	}
	if err := os.Chmod(version, dirMode); err != nil { // MkdirTemp's is 0700
		removeVersion(version)
		return err
	}
	if err := writeFiles(version, m.Files, m.ReadOnly); err != nil {
		removeVersion(version)
		return err
	}
	tmp := filepath.Join(dir, dataLink+"_tmp")
	_ = os.Remove(tmp) // left by a writer that died between the two steps
	if err := os.Symlink(filepath.Base(version), tmp); err != nil {
		removeVersion(version)
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, dataLink)); err != nil {
		removeVersion(version)
		return err
	}
	if err := linkTopLevel(dir, m.Files); err != nil {
		return err
	}
	if old != "" && old != filepath.Base(version) {
		removeVersion(filepath.Join(dir, old))
	}
	return nil
}

// linkTopLevel points a link at ..data/NAME for each top-level name of files and removes the
// links of names gone. Anything else in dir (a mount nested in this one) is left alone.
func linkTopLevel(dir string, files []File) error {
	want := map[string]bool{}
	for _, f := range files {
		want[strings.SplitN(f.Path, "/", 2)[0]] = true
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	have := map[string]bool{}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, "..") {
			continue
		}
		have[name] = true
		if target, err := os.Readlink(filepath.Join(dir, name)); err == nil && target == dataLink+"/"+name && !want[name] {
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				return err
			}
		}
	}
	for name := range want {
		if !have[name] {
			if err := os.Symlink(dataLink+"/"+name, filepath.Join(dir, name)); err != nil {
				return err
			}
		}
	}
	return nil
}

// writeFiles writes files under dir with their modes (not the umask's).
func writeFiles(dir string, files []File, readOnly bool) error {
	for _, f := range files {
		p := filepath.Join(dir, filepath.FromSlash(f.Path))
		if err := os.MkdirAll(filepath.Dir(p), dirMode); err != nil {
			return err
		}
		if err := os.WriteFile(p, f.Data, f.Mode.Perm()); err != nil {
			return err
		}
		if err := os.Chmod(p, f.Mode.Perm()); err != nil {
			return err
		}
	}
	if !readOnly {
		return nil
	}
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		return os.Chmod(p, dirMode&^0o222)
	})
}

// removeVersion removes a version folder, read-only ones included.
func removeVersion(dir string) { _ = Remove(dir) }

// same says whether version holds exactly files, with their modes.
func same(version string, files []File) bool {
	n := 0
	err := filepath.WalkDir(version, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		n++
		return nil
	})
	if err != nil || n != len(files) {
		return false
	}
	for _, f := range files {
		p := filepath.Join(version, filepath.FromSlash(f.Path))
		st, err := os.Lstat(p)
		if err != nil || !st.Mode().IsRegular() || st.Mode().Perm() != f.Mode.Perm() {
			return false
		}
		if b, err := os.ReadFile(p); err != nil || !bytes.Equal(b, f.Data) {
			return false
		}
	}
	return true
}

// writeOnce writes a subPath mount the first time only: the kubelet binds a subPath when
// the container starts and never updates it.
func writeOnce(dest string, m Mount) error {
	if _, err := os.Lstat(dest); err == nil {
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := mkdirAll(filepath.Dir(dest)); err != nil {
		return err
	}
	if len(m.Files) == 1 && m.Files[0].Path == "" {
		// A temporary name and a rename, so no reader sees a half-written file.
		f := m.Files[0]
		tmp := filepath.Join(filepath.Dir(dest), fmt.Sprintf(".%s.tp-%d", path.Base(filepath.ToSlash(dest)), os.Getpid()))
		if err := os.WriteFile(tmp, f.Data, f.Mode.Perm()); err != nil {
			return err
		}
		if err := os.Chmod(tmp, f.Mode.Perm()); err != nil {
			_ = os.Remove(tmp)
			return err
		}
		return os.Rename(tmp, dest)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dest), "."+filepath.Base(dest)+".tp-")
	if err != nil {
		return err
	}
	if err := os.Chmod(tmp, dirMode); err != nil {
		removeVersion(tmp)
		return err
	}
	if err := writeFiles(tmp, m.Files, m.ReadOnly); err != nil {
		removeVersion(tmp)
		return err
	}
	if err := os.Rename(tmp, dest); err != nil {
		removeVersion(tmp)
		return err
	}
	return nil
}
