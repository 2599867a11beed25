package main

import "github.com/tpdev/tp/remote"

// exitCode is 2 for the user's errors (what they typed or chose, their kubeconfig, their
// rights), 1 for failures of the system or the cluster.
func exitCode(err error) int {
	if remote.KindOf(err).UserFault() {
		return 2
	}
	return 1
}
