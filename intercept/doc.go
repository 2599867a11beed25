// Package intercept will hold intercepts: the traffic agent's configuration, its injection
// into workloads as a sidecar, the agent itself, and the port redirection that lets requests
// for a workload land on the developer's machine.
package intercept
