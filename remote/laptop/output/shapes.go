package output

import (
	"time"

	httproute "github.com/tpdev/tp/intercept/route"
	"github.com/tpdev/tp/remote/laptop/control"
)

// Status is tp status -o json (and its hidden alias --json): the running connections this
// machine has, those the flags choose.
type Status struct {
	Header
	// Sessions are as the connections' control sockets report them; never null.
	Sessions []control.Info `json:"sessions"`
}

// List is tp list -o json: who intercepts what, and the workloads with tp's agent.
type List struct {
	Header
	Intercepts []ListedIntercept `json:"intercepts"` // never null
	// Workloads are those with tp's agent, intercepted or not; never null.
	Workloads []Workload `json:"workloads"`
}

// ListedIntercept is one intercept in tp list.
type ListedIntercept struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	Kind      string `json:"kind"` // the workload's: Deployment, StatefulSet, ReplicaSet
	Workload  string `json:"workload"`
	Port      string `json:"port"`
	// HTTP is the filter of a personal intercept; null for one that takes every request.
	HTTP *httproute.Filter `json:"http"`
	// Wiretap: the holder gets copies; the callers' answers come from the app.
	Wiretap bool      `json:"wiretap"`
	Holder  string    `json:"holder"`
	Client  string    `json:"client,omitempty"`
	Since   time.Time `json:"since"`
	Agents  int32     `json:"agents"`
	Problem string    `json:"problem,omitempty"`
}

// Workload is a workload with tp's agent in tp list.
type Workload struct {
	Namespace   string `json:"namespace"`
	Kind        string `json:"kind"`
	Name        string `json:"name"`
	Intercepted bool   `json:"intercepted"`
}

// Version is tp version -o json: this tp, and the manager of the cluster when tp could
// reach it.
type Version struct {
	Header
	Client  ClientVersion  `json:"client"`
	Manager ManagerVersion `json:"manager"`
}

// ClientVersion is this tp's build.
type ClientVersion struct {
	Version string `json:"version"` // v0.5.0, a git description, or dev
	Image   string `json:"image"`   // the cluster image tp install deploys by default
	Go      string `json:"go"`
	OS      string `json:"os"`
	Arch    string `json:"arch"`
}

// ManagerVersion is the traffic manager tp install put in the cluster, as its Deployment
// says.
type ManagerVersion struct {
	// Version is the tag of the manager's image ("" when the image has none, or is pinned
	// by digest).
	Version   string `json:"version"`
	Image     string `json:"image"`
	Namespace string `json:"namespace"`
	// Ready: the Deployment's current revision is rolled out and available.
	Ready bool `json:"ready"`
	// Skew says why this tp cannot work with that manager, and which command fixes it;
	// empty when it can (or when tp cannot tell).
	Skew string `json:"skew"`
	// Note is a difference tp can work with, or cannot judge (a development build).
	Note string `json:"note,omitempty"`
	// Error says why tp knows nothing of the manager: the cluster is unreachable, or tp
	// is not installed there. The other fields but Namespace are then empty.
	Error string `json:"error"`
}

// Intercept is tp intercept -o json: the intercept held, printed once it is (tp leave
// Name ends it; tp intercept -- CMD has no -o).
type Intercept struct {
	Header
	Name     string      `json:"name"`
	Workload WorkloadRef `json:"workload"`
	// HTTP is the filter of a personal intercept (its id is the x-tp-intercept header's
	// value that brings one's own requests here); null for one that takes every request.
	HTTP *httproute.Filter `json:"http"`
	// Wiretap: copies come here; the app still answers the callers.
	Wiretap bool            `json:"wiretap"`
	Ports   []InterceptPort `json:"ports"`
}

// WorkloadRef names a workload.
type WorkloadRef struct {
	Namespace string `json:"namespace"`
	Kind      string `json:"kind"` // Deployment, StatefulSet, ReplicaSet
	Name      string `json:"name"`
}

// InterceptPort is one port of an intercept.
type InterceptPort struct {
	// Name is the port's own intercept: Intercept.Name for one port, NAME-PORT for each of
	// several.
	Name string `json:"name"`
	// Port is the workload's port, by the name the agent serves it under.
	Port        string `json:"port"`
	Service     string `json:"service"`
	ServicePort int32  `json:"servicePort"`
	// Local is where the requests come on this machine.
	Local  string `json:"local"`
	Agents int    `json:"agents"`
	// Note is what the manager says of other intercepts whose filters overlap this one.
	Note string `json:"note,omitempty"`
}

// ManifestList is tp install --dry-run -o json: the manifest tp install applies, as one
// Kubernetes List (apiVersion v1, kind List) of its objects in the order they are applied,
// which kubectl apply -f takes as it takes the YAML. It is Kubernetes' shape, not tp's: it
// has no "version". -o yaml (and text) print the manifest as YAML documents.
type ManifestList struct {
	APIVersion string           `json:"apiVersion"` // v1
	Kind       string           `json:"kind"`       // List
	Items      []map[string]any `json:"items"`
}
