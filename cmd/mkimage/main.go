// Command mkimage writes a single-layer OCI image tarball holding one static binary
// (package deploy/image); `make images` uses it, no Docker daemon needed.
//
//	mkimage -bin bin/linux_amd64/workload -ref localhost/tp/workload:test -out bin/images/workload.tar
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
	flag.StringVar(&spec.Binary, "bin", "", "static binary to put in the image")
	flag.StringVar(&spec.Ref, "ref", "", "image reference, e.g. localhost/tp/workload:test")
	flag.StringVar(&spec.Path, "path", "", "path of the binary in the image (default /NAME)")
	flag.StringVar(&spec.User, "user", "", "user to run as, e.g. 65532:65532 (default root)")
	flag.StringVar(&spec.Arch, "arch", runtime.GOARCH, "architecture of the binary")
	flag.Parse()
	if spec.Binary == "" || spec.Ref == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "mkimage: -bin, -ref and -out are required")
		flag.Usage()
		os.Exit(2)
	}
	if spec.Path == "" {
		spec.Path = "/" + path.Base(spec.Binary)
	}
	spec.Args = strings.Fields(*args)
	for _, e := range strings.Split(*extra, ",") {
		if e == "" {
			continue
		}
		bin, p, ok := strings.Cut(e, ":")
		if !ok {
			fmt.Fprintf(os.Stderr, "mkimage: -extra %q: want BINARY:PATH\n", e)
			os.Exit(2)
		}
		spec.Extra = append(spec.Extra, image.File{Binary: bin, Path: p})
	}
	if err := image.WriteFile(spec, *out); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}
