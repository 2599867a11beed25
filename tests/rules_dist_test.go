package tests

import (
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/tpdev/tp/deploy/release"
)

// makeN is what `make -n TARGET VARS...` would run, in the module's root.
func makeN(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command("make", append([]string{"-n"}, args...)...)
	cmd.Dir = ".."
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make -n %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// `make dist` builds tp for every platform of deploy/release (whose archives and krew
// manifest need each) and no other, the cluster image for each of its architectures, and
// stamps the release's image, IMAGE:VERSION, into every binary.
func TestDistBuildsEveryReleasePlatform(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("no make")
	}
	plan := makeN(t, "dist", "VERSION=v9.8.7", "IMAGE=registry.example.com/tools/tp")
	tpBuilds := regexp.MustCompile(`GOOS=(\w+) GOARCH=(\w+) \S+ build .*-o dist/(\S+) \./cmd/tp\n`).FindAllStringSubmatch(plan, -1)
	built := map[release.Platform]bool{}
	for _, m := range tpBuilds {
		p := release.Platform{OS: m[1], Arch: m[2]}
		if m[3] != p.Binary() {
			t.Errorf("make dist writes tp for %s to dist/%s, deploy/release reads %s", p, m[3], p.Binary())
		}
		built[p] = true
	}
	for _, p := range release.Platforms {
		if !built[p] {
			t.Errorf("make dist builds no tp for %s: add it to DIST_PLATFORMS", p)
		}
	}
	if len(tpBuilds) != len(release.Platforms) {
		t.Errorf("make dist builds tp %d times, deploy/release has %d platforms: keep DIST_PLATFORMS and release.Platforms one list", len(tpBuilds), len(release.Platforms))
	}
	for _, arch := range release.ImageArchs {
		if !strings.Contains(plan, "GOOS=linux GOARCH="+arch+" ") || !strings.Contains(plan, "-o bin/dist/linux_"+arch+"/ ./cmd/tp-cluster ./cmd/tp-agent") {
			t.Errorf("make dist builds no cluster binaries for %s", arch)
		}
	}
	if !strings.Contains(plan, "mkimage -oci -arch "+strings.Join(release.ImageArchs, ",")+" ") || !strings.Contains(plan, "-out dist/"+release.ImageFile) {
		t.Errorf("make dist's image is not one OCI archive of %v at dist/%s:\n%s", release.ImageArchs, release.ImageFile, plan)
	}
	stamp := "buildinfo.Image=registry.example.com/tools/tp:v9.8.7'"
	if n := strings.Count(plan, stamp); n != len(release.Platforms)+len(release.ImageArchs) {
		t.Errorf("%d builds stamp %s, want every one of make dist's %d", n, stamp, len(release.Platforms)+len(release.ImageArchs))
	}
	for _, want := range []string{"-ref registry.example.com/tools/tp:v9.8.7 ", "mkdist -dir dist -version v9.8.7 "} {
		if !strings.Contains(plan, want) {
			t.Errorf("make dist does not run %q:\n%s", want, plan)
		}
	}
	if plan := makeN(t, "dist", "VERSION=v1.0.0"); !strings.Contains(plan, "buildinfo.Image=ghcr.io/tpdev/tp:v1.0.0'") {
		t.Errorf("make dist without IMAGE does not stamp ghcr.io/tpdev/tp:v1.0.0:\n%s", plan)
	}
	// The dev path keeps its local image.
	if plan := makeN(t, "build", "VERSION=v1.0.0"); !strings.Contains(plan, "buildinfo.Image=localhost/tp/tp:v1.0.0'") {
		t.Errorf("make build no longer stamps localhost/tp/tp:VERSION:\n%s", plan)
	}
	check := exec.Command("git", "check-ignore", "-q", "dist/tp_linux_amd64")
	check.Dir = ".."
	if err := check.Run(); err != nil {
		t.Errorf("dist/ is not ignored by git (%v): release outputs never go in git", err)
	}
}

// CI (make test) builds the release and checks it as a user meets it, so a platform that
// stops building, or an image that loses an architecture, fails CI.
func TestCIChecksTheRelease(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("no make")
	}
	plan := makeN(t, "test", "VERSION=v9.8.7")
	for _, want := range []string{"mkdist -check -dir dist -version v9.8.7 ", "-image ghcr.io/tpdev/tp:v9.8.7 ", "-image-files /tp-cluster,/tp-agent"} {
		if !strings.Contains(plan, want) {
			t.Errorf("make test does not run %q", want)
		}
	}
}
