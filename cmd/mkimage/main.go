// Command mkimage writes a single-layer OCI image tarball holding one static binary
// (package deploy/image); `make images` uses it, no Docker daemon needed. With -oci it
// writes the image for each of -arch's architectures as one OCI archive (an image index,
// `make dist`'s release image); {arch} in -bin and -extra names each one's binaries.
//
//	mkimage -bin bin/linux_amd64/workload -ref localhost/tp/workload:test -out bin/images/workload.tar
//	mkimage -oci -arch amd64,arm64 -bin 'bin/linux_{arch}/tp-cluster' -ref ghcr.io/tpdev/tp:v1 -out dist/tp_image.oci.tar
package main

import (
	"flag"
	"fmt"
	"os"
	"path"
	"runtime"
	"strings"

	"github.com/tpdev/tp/deploy/image"
)

func main() {
	spec := image.Spec{}
	out := flag.String("out", "", "tarball to write")
	args := flag.String("args", "", "default arguments, space separated")
	extra := flag.String("extra", "", "more binaries, BINARY:PATH, comma separated")
	oci := flag.Bool("oci", false, "write an OCI archive (image layout with an index) of every -arch, not a docker-save tarball")
	flag.StringVar(&spec.Binary, "bin", "", "static binary to put in the image")
	flag.StringVar(&spec.Ref, "ref", "", "image reference, e.g. localhost/tp/workload:test")
	flag.StringVar(&spec.Path, "path", "", "path of the binary in the image (default /NAME)")
	flag.StringVar(&spec.User, "user", "", "user to run as, e.g. 65532:65532 (default root)")
	flag.StringVar(&spec.Arch, "arch", runtime.GOARCH, "architecture of the binary; with -oci, a comma separated list")
	flag.Parse()
	if spec.Binary == "" || spec.Ref == "" || *out == "" {
		fail(2, "-bin, -ref and -out are required")
	}
	if spec.Path == "" {
		spec.Path = "/" + path.Base(strings.ReplaceAll(spec.Binary, "{arch}", ""))
	}
	spec.Args = strings.Fields(*args)
	spec.Extra = extraFiles(*extra)
	var err error
	if *oci {
		err = image.WriteOCIArchive(perArch(spec), *out)
	} else {
		err = image.WriteFile(spec, *out)
	}
	if err != nil {
		fail(1, err.Error())
	}
}

// extraFiles parses -extra.
func extraFiles(list string) []image.File {
	var files []image.File
	for _, e := range strings.Split(list, ",") {
		if e == "" {
			continue
		}
		bin, p, ok := strings.Cut(e, ":")
		if !ok {
			fail(2, fmt.Sprintf("-extra %q: want BINARY:PATH", e))
		}
		files = append(files, image.File{Binary: bin, Path: p})
	}
	return files
}

// perArch is spec for each architecture of its comma separated Arch, {arch} in its
// binaries' paths replaced.
func perArch(spec image.Spec) []image.Spec {
	var specs []image.Spec
	for _, arch := range strings.Split(spec.Arch, ",") {
		s := spec
		s.Arch = arch
		s.Binary = strings.ReplaceAll(spec.Binary, "{arch}", arch)
		s.Extra = nil
		for _, f := range spec.Extra {
			s.Extra = append(s.Extra, image.File{Binary: strings.ReplaceAll(f.Binary, "{arch}", arch), Path: f.Path})
		}
		specs = append(specs, s)
	}
	return specs
}

func fail(code int, msg string) {
	fmt.Fprintln(os.Stderr, "mkimage:", msg)
	if code == 2 {
		flag.Usage()
	}
	os.Exit(code)
}
