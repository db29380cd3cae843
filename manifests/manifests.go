// Package manifests embeds the Kubernetes manifests shipped in this
// directory, so that tests can hold them to the code: the RBAC rules must
// grant exactly what preflight asks for, and every manifest must be
// accepted by a real API server.
package manifests

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// FS holds the manifests.
//
//go:embed *.yaml helm/*.yaml
var FS embed.FS

// Kubernetes lists the files that hold Kubernetes objects (the Helm values
// file holds chart values, not objects).
var Kubernetes = []string{"rbac-migrate.yaml", "rbac-migrate-velero-helm.yaml", "rbac-migrate-install.yaml", "rbac-drill.yaml", "rbac-drill-create-namespace.yaml", "rbac-drill-pod-proxy.yaml", "admission-drill.yaml", "cronjob-drill.yaml", "rbac-dr-backup.yaml", "rbac-dr-restore.yaml", "rbac-dr-pod-proxy.yaml", "cronjob-dr-backup.yaml", "rbac-dr-drill.yaml", "admission-dr-drill.yaml", "helm/prebound-claim-older-charts.yaml"}

// Objects decodes every object of a multi-document manifest.
func Objects(name string) ([]*unstructured.Unstructured, error) {
	b, err := FS.ReadFile(name)
	if err != nil {
		return nil, err
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	var out []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if len(m) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: m}
		if u.GetKind() == "" || u.GetAPIVersion() == "" {
			return nil, fmt.Errorf("%s: document %d has no kind or apiVersion", name, len(out)+1)
		}
		out = append(out, u)
	}
}
