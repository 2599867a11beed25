// Command mkdist finishes `make dist` (package deploy/release): from the tp binaries in the
// dist folder it writes the krew archives, the krew plugin manifest and SHA256SUMS. With
// -check it verifies a finished dist folder instead (make dist-check, in CI).
//
//	mkdist -dir dist -version v0.3.0 -url https://github.com/tpdev/tp/releases/download/v0.3.0
//	mkdist -check -dir dist -version v0.3.0 -url ... -image ghcr.io/tpdev/tp:v0.3.0
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/tpdev/tp/deploy/release"
)

func main() {
	var cfg release.CheckConfig
	check := flag.Bool("check", false, "verify the dist folder rather than finish it")
	files := flag.String("image-files", "/tp-cluster,/tp-agent", "with -check: the paths every image must hold, built for its architecture")
	flag.StringVar(&cfg.Dir, "dir", "dist", "the dist folder, holding tp_OS_ARCH for every platform")
	flag.StringVar(&cfg.Version, "version", "", "the release's version, e.g. v0.3.0")
	flag.StringVar(&cfg.URL, "url", "", "where the krew archives will be downloaded from (ARCHIVE is appended)")
	flag.StringVar(&cfg.Image, "image", "", "with -check: the image reference the release installs, e.g. ghcr.io/tpdev/tp:v0.3.0")
	flag.Parse()
	if cfg.Version == "" || cfg.URL == "" || (*check && cfg.Image == "") {
		fmt.Fprintln(os.Stderr, "mkdist: -version and -url are required, and -image with -check")
		flag.Usage()
		os.Exit(2)
	}
	if !*check {
		if err := release.Finish(cfg.Config); err != nil {
			fmt.Fprintln(os.Stderr, "mkdist:", err)
			os.Exit(1)
		}
		return
	}
	cfg.ImageFiles = strings.Split(*files, ",")
	report, err := release.Check(context.Background(), cfg)
	for _, line := range report {
		fmt.Println("dist-check:", line)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkdist:", err)
		os.Exit(1)
	}
}
