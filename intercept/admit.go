package intercept

import (
	"encoding/json"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/tpdev/tp/remote/agentspec"
)

// patchOp is one RFC 6902 operation of an admission answer.
type patchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

// AdmitPod returns the JSON patch (RFC 6902) that gives pod, being created from a workload
// rec describes, tp's agent: the same change Inject makes to a template, made to the pod
// instead. A pod that already carries the agent with rec's configuration gets no patch (nil).
func AdmitPod(pod *corev1.Pod, rec Record) ([]byte, error) {
	if err := rec.Agent.check(); err != nil {
		return nil, err
	}
	if err := checkTargets(rec.Targets); err != nil {
		return nil, err
	}
	tmpl := &corev1.PodTemplateSpec{ObjectMeta: *pod.ObjectMeta.DeepCopy(), Spec: *pod.Spec.DeepCopy()}
	for _, c := range pod.Spec.Containers {
		if c.Name == agentspec.Container {
			// Created from a template tp injected (the old way), or admitted twice.
			if hash, err := rec.Hash(); err == nil && pod.Annotations[AgentHashAnnotation] == hash {
				return nil, nil
			}
			return nil, fmt.Errorf("pod already has a %s container of another configuration", agentspec.Container)
		}
	}
	want, err := inject(tmpl, rec.Agent, rec.Targets)
	if err != nil {
		return nil, err
	}
	ops := []patchOp{
		{Op: "replace", Path: "/spec/containers", Value: want.Spec.Containers},
		{Op: opFor(len(pod.Spec.Volumes) > 0), Path: "/spec/volumes", Value: want.Spec.Volumes},
		{Op: opFor(pod.Annotations != nil), Path: "/metadata/annotations", Value: want.Annotations},
	}
	if len(pod.Spec.InitContainers) > 0 {
		// Sidecars (restartable init containers) may have had their port renamed too.
		ops = append(ops, patchOp{Op: "replace", Path: "/spec/initContainers", Value: want.Spec.InitContainers})
	}
	return json.Marshal(ops)
}

// AnnotatePatch is the JSON patch (RFC 6902) that sets pod's annotation key to value and
// changes nothing else: how a webhook marks a pod it admits as it is.
func AnnotatePatch(pod *corev1.Pod, key, value string) []byte {
	op := patchOp{Op: "add", Path: "/metadata/annotations", Value: map[string]string{key: value}}
	if pod.Annotations != nil {
		op = patchOp{Op: "add", Path: "/metadata/annotations/" + strings.NewReplacer("~", "~0", "/", "~1").Replace(key), Value: value}
	}
	patch, err := json.Marshal([]patchOp{op})
	if err != nil {
		return nil // a map of strings always encodes
	}
	return patch
}

func opFor(exists bool) string {
	if exists {
		return "replace"
	}
	return "add"
}
