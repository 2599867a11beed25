package deploy

import "testing"

func TestObjectsSplitsDocumentsAndSkipsEmptyOnes(t *testing.T) {
	manifest := []byte(`# leading comment
apiVersion: v1
kind: Namespace
metadata: {name: a}
---
---
apiVersion: v1
kind: ConfigMap
metadata: {name: b, namespace: a}
data: {k: v}
`)
	objs, err := Objects(manifest)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 2 || objs[0].GetKind() != "Namespace" || objs[1].GetName() != "b" || objs[1].GetNamespace() != "a" {
		t.Fatalf("objects: %+v", objs)
	}
	if _, err := Objects([]byte("kind: [unclosed")); err == nil {
		t.Fatal("broken YAML: want an error")
	}
}
