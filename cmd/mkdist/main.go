// Command mkdist finishes `make dist` (package deploy/release): from the tp binaries in the
// dist folder it writes the krew archives, the krew plugin manifest and SHA256SUMS.
//
//	mkdist -dir dist -version v0.3.0 -url https://github.com/tpdev/tp/releases/download/v0.3.0
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/tpdev/tp/deploy/release"
)

func main() {
	var cfg release.Config
	flag.StringVar(&cfg.Dir, "dir", "dist", "the dist folder, holding tp_OS_ARCH for every platform")
	flag.StringVar(&cfg.Version, "version", "", "the release's version, e.g. v0.3.0")
	flag.StringVar(&cfg.URL, "url", "", "where the krew archives will be downloaded from (ARCHIVE is appended)")
	flag.Parse()
	if cfg.Version == "" || cfg.URL == "" {
		fmt.Fprintln(os.Stderr, "mkdist: -version and -url are required")
		flag.Usage()
		os.Exit(2)
	}
	if err := release.Finish(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "mkdist:", err)
		os.Exit(1)
	}
}
