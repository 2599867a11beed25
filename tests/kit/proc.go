package kit

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/tpdev/tp/deploy"
)

// ProcWhere is the first process on this node whose command line (NUL-separated) and
// environment match, or 0.
func ProcWhere(match func(cmd string, env []string) bool) int {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		env, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if match(string(cmd), strings.Split(string(env), "\x00")) {
			return pid
		}
	}
	return 0
}

// ManagerProcess is the process of a manager pod of the default install on this node, or 0.
func ManagerProcess() int {
	return ProcWhere(func(cmd string, env []string) bool {
		return strings.HasPrefix(cmd, "/tp-cluster\x00") && slices.Contains(env, "POD_NAMESPACE="+deploy.DefaultNamespace)
	})
}
