// Command fakeversion stands in for tp in release's tests: `version -o json` prints the
// client part of tp.version, with the version and image set at link time.
package main

import (
	"encoding/json"
	"os"
	"runtime"
)

var version, image string

func main() {
	if len(os.Args) != 4 || os.Args[1] != "version" || os.Args[2] != "-o" || os.Args[3] != "json" {
		os.Exit(2)
	}
	_ = json.NewEncoder(os.Stdout).Encode(map[string]any{"version": 1, "kind": "tp.version",
		"client": map[string]string{"version": version, "image": image, "go": runtime.Version(), "os": runtime.GOOS, "arch": runtime.GOARCH}})
}
