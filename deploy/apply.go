// Package deploy owns tp's cluster-side manifests and how they are applied and removed.
package deploy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
)

// Objects splits a multi-document YAML (or JSON) manifest into objects, skipping empty ones.
func Objects(manifest []byte) ([]*unstructured.Unstructured, error) {
	dec := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(manifest), 4096)
	var objs []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return objs, nil
			}
			return nil, fmt.Errorf("manifest: %w", err)
		}
		if len(m) == 0 {
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
}

// Apply applies every object of the manifest with server-side apply, as fieldManager, in the
// order given (put Namespaces and CRDs first). It takes ownership of conflicting fields: the
// manifest is the truth for what it names.
func Apply(ctx context.Context, cfg *rest.Config, manifest []byte, fieldManager string) error {
	objs, err := Objects(manifest)
	if err != nil {
		return err
	}
	a, err := NewApplier(cfg, fieldManager)
	if err != nil {
		return err
	}
	for _, obj := range objs {
		if err := a.Apply(ctx, obj); err != nil {
			return err
		}
	}
	return nil
}

// Applier applies objects one at a time with server-side apply, as Apply does, reusing one
// discovery cache: for callers that pick objects or explain each failure themselves.
type Applier struct {
	mapper       *restmapper.DeferredDiscoveryRESTMapper
	dyn          dynamic.Interface
	fieldManager string
}

// NewApplier makes an Applier for the cluster of cfg. It does not contact the cluster.
func NewApplier(cfg *rest.Config, fieldManager string) (*Applier, error) {
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("apply: %w", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("apply: %w", err)
	}
	return &Applier{
		mapper:       restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc)),
		dyn:          dyn,
		fieldManager: fieldManager,
	}, nil
}

// Apply applies obj with server-side apply, forcing ownership of conflicting fields.
func (a *Applier) Apply(ctx context.Context, obj *unstructured.Unstructured) error {
	gvk := obj.GroupVersionKind()
	mapping, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return fmt.Errorf("apply %s %s: %w", gvk.Kind, obj.GetName(), err)
	}
	var ri dynamic.ResourceInterface = a.dyn.Resource(mapping.Resource)
	if mapping.Scope.Name() == "namespace" {
		ns := obj.GetNamespace()
		if ns == "" {
			ns = "default"
		}
		ri = a.dyn.Resource(mapping.Resource).Namespace(ns)
	}
	if _, err := ri.Apply(ctx, obj.GetName(), obj, metav1.ApplyOptions{FieldManager: a.fieldManager, Force: true}); err != nil {
		return fmt.Errorf("apply %s %s: %w", gvk.Kind, obj.GetName(), err)
	}
	return nil
}
