//go:build tools

// Package tools pins kube-router, the test cluster's NetworkPolicy controller (its firewall
// alone: the bridge CNI and kube-proxy do the rest). It rejects what a policy denies, so a
// denied connection is refused rather than left to time out.
package tools

import _ "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"
