// Package buildinfo holds what the build stamps into tp's binaries with -ldflags -X.
package buildinfo

// Version is tp's version, e.g. v0.1.0 or a git description; "dev" when built without make.
var Version = "dev"

// Image is the cluster image that `tp install` deploys when no --image is given; the build
// sets it to the image it makes alongside the binary.
var Image = "localhost/tp/tp:dev"
