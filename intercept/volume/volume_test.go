package volume

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// versions lists dir's version folders.
func versions(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "..") && e.Name() != dataLink {
			out = append(out, e.Name())
		}
	}
	return out
}

// tempRoot is a temporary root, removed by Remove, which the test checks.
func tempRoot(t *testing.T) string {
	root := filepath.Join(t.TempDir(), "root")
	t.Cleanup(func() {
		if err := Remove(root); err != nil {
			t.Errorf("remove %s: %v", root, err)
		}
		if _, err := os.Lstat(root); !os.IsNotExist(err) {
			t.Errorf("%s is still there after Remove (%v)", root, err)
		}
	})
	return root
}

func configTree(files ...File) *Tree {
	return &Tree{Mounts: []Mount{{Path: "/etc/app", Volume: "cfg", Kind: "configMap", ReadOnly: true, Files: files}}}
}

func TestWriteToLayoutAndUpdate(t *testing.T) {
	root := tempRoot(t)
	dir := filepath.Join(root, "etc", "app")
	first := configTree(
		File{Path: "app.yaml", Data: []byte("level: debug\n"), Mode: 0o644},
		File{Path: "keys/id", Data: []byte("k1"), Mode: 0o400},
		File{Path: "gone", Data: []byte("x"), Mode: 0o600},
	)
	if err := first.WriteTo(root); err != nil {
		t.Fatal(err)
	}
	v1 := versions(t, dir)
	if len(v1) != 1 || !strings.HasPrefix(v1[0], "..20") {
		t.Fatalf("version folders %v, want one timestamped", v1)
	}
	if target, err := os.Readlink(filepath.Join(dir, dataLink)); err != nil || target != v1[0] {
		t.Errorf("..data -> %q (%v), want %s", target, err, v1[0])
	}
	for _, name := range []string{"app.yaml", "keys", "gone"} {
		if target, err := os.Readlink(filepath.Join(dir, name)); err != nil || target != "..data/"+name {
			t.Errorf("%s -> %q (%v), want ..data/%s", name, target, err, name)
		}
	}
	if got := readFile(t, filepath.Join(dir, "keys", "id")); got != "k1" {
		t.Errorf("keys/id = %q", got)
	}
	if st, err := os.Stat(filepath.Join(dir, "keys", "id")); err != nil || st.Mode().Perm() != 0o400 {
		t.Errorf("keys/id mode %v (%v), want 0400", st.Mode(), err)
	}
	// A read-only mount's folders are read-only.
	if st, err := os.Stat(filepath.Join(dir, "keys")); err != nil || st.Mode().Perm()&0o222 != 0 {
		t.Errorf("keys folder mode %v (%v), want read-only", st.Mode(), err)
	}

	// Unchanged: the same version stays.
	if err := first.WriteTo(root); err != nil {
		t.Fatal(err)
	}
	if v := versions(t, dir); !slices.Equal(v, v1) {
		t.Errorf("an unchanged rewrite made versions %v, had %v", v, v1)
	}

	second := configTree(
		File{Path: "app.yaml", Data: []byte("level: info\n"), Mode: 0o644},
		File{Path: "keys/id", Data: []byte("k2"), Mode: 0o400},
		File{Path: "new", Data: []byte("n"), Mode: 0o644},
	)
	if err := second.WriteTo(root); err != nil {
		t.Fatal(err)
	}
	v2 := versions(t, dir)
	if len(v2) != 1 || v2[0] == v1[0] {
		t.Errorf("after an update, versions %v (had %v): want one, new", v2, v1)
	}
	if got := readFile(t, filepath.Join(dir, "app.yaml")); got != "level: info\n" {
		t.Errorf("app.yaml = %q after the update", got)
	}
	if got := readFile(t, filepath.Join(dir, "new")); got != "n" {
		t.Errorf("new = %q", got)
	}
	if _, err := os.Lstat(filepath.Join(dir, "gone")); !os.IsNotExist(err) {
		t.Errorf("gone is still there after the update (%v)", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, dataLink+"_tmp")); !os.IsNotExist(err) {
		t.Errorf("..data_tmp left behind (%v)", err)
	}
}

// A mount nested in another survives the outer one's updates.
func TestWriteToNestedMount(t *testing.T) {
	root := tempRoot(t)
	tree := &Tree{Mounts: []Mount{
		{Path: "/etc/app/certs", Volume: "certs", ReadOnly: true, Files: []File{{Path: "tls.crt", Data: []byte("C"), Mode: 0o644}}},
		{Path: "/etc/app", Volume: "cfg", ReadOnly: true, Files: []File{{Path: "a", Data: []byte("1"), Mode: 0o644},
			{Path: "certs/tls.crt", Data: []byte("outer"), Mode: 0o644}, {Path: "app.conf", Data: []byte("outer"), Mode: 0o644}}},
		{Path: "/etc/app/app.conf", Volume: "conf", SubPath: "app.conf", ReadOnly: true, Files: []File{{Data: []byte("inner"), Mode: 0o644}}},
	}}
	if err := tree.WriteTo(root); err != nil {
		t.Fatal(err)
	}
	tree.Mounts[1].Files[0].Data = []byte("2")
	if err := tree.WriteTo(root); err != nil {
		t.Fatal(err)
	}
	// The nested mounts cover the outer volume's files of their names.
	if got := readFile(t, filepath.Join(root, "etc/app/certs/tls.crt")); got != "C" {
		t.Errorf("nested tls.crt = %q", got)
	}
	if got := readFile(t, filepath.Join(root, "etc/app/app.conf")); got != "inner" {
		t.Errorf("nested app.conf = %q", got)
	}
	if got := readFile(t, filepath.Join(root, "etc/app/a")); got != "2" {
		t.Errorf("a = %q", got)
	}
}

// subPath mounts are written once, as the kubelet binds them once; emptyDir is a folder.
func TestWriteToSubPathAndScratch(t *testing.T) {
	root := tempRoot(t)
	tree := &Tree{Mounts: []Mount{
		{Path: "/etc/nginx/nginx.conf", Volume: "cfg", SubPath: "nginx.conf", ReadOnly: true, Files: []File{{Data: []byte("v1"), Mode: 0o640}}},
		{Path: "/etc/tls", Volume: "certs", SubPath: "prod", ReadOnly: true, Files: []File{{Path: "tls.key", Data: []byte("K"), Mode: 0o600}}},
		{Path: "/cache", Volume: "cache", Scratch: true},
		{Path: "/ro", Volume: "ro", Scratch: true, ReadOnly: true},
	}}
	if err := tree.WriteTo(root); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(root, "etc/nginx/nginx.conf")
	if st, err := os.Lstat(conf); err != nil || !st.Mode().IsRegular() || st.Mode().Perm() != 0o640 {
		t.Fatalf("nginx.conf: %v %v, want a regular file, 0640", st, err)
	}
	if got := readFile(t, filepath.Join(root, "etc/tls/tls.key")); got != "K" {
		t.Errorf("tls.key = %q", got)
	}
	if st, err := os.Stat(filepath.Join(root, "cache")); err != nil || !st.IsDir() || st.Mode().Perm()&0o200 == 0 {
		t.Errorf("cache: %v %v, want a writable folder", st, err)
	}
	if st, err := os.Stat(filepath.Join(root, "ro")); err != nil || !st.IsDir() || st.Mode().Perm()&0o222 != 0 {
		t.Errorf("ro: %v %v, want a read-only folder", st, err)
	}
	tree.Mounts[0].Files[0].Data = []byte("v2")
	if err := tree.WriteTo(root); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, conf); got != "v1" {
		t.Errorf("a subPath file was updated to %q: the kubelet never updates one", got)
	}
	leftovers, _ := filepath.Glob(filepath.Join(root, "etc/*/.*tp-*"))
	if len(leftovers) > 0 {
		t.Errorf("temporary files left: %v", leftovers)
	}
}

func TestWriteToRefusesPathsOutside(t *testing.T) {
	for _, tree := range []*Tree{
		configTree(File{Path: "../escape", Data: []byte("x"), Mode: 0o644}),
		configTree(File{Path: "/abs", Data: []byte("x"), Mode: 0o644}),
		{Mounts: []Mount{{Path: "/", Volume: "root", Files: []File{{Path: "x", Mode: 0o644}}}}},
		configTree(File{Path: "", Data: []byte("x"), Mode: 0o644}),
	} {
		root := tempRoot(t)
		if err := tree.WriteTo(root); err == nil {
			t.Errorf("%+v: written", tree.Mounts[0])
		}
		if _, err := os.Stat(filepath.Join(filepath.Dir(root), "escape")); err == nil {
			t.Errorf("a file escaped the root")
		}
	}
}
