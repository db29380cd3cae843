package helmredeploy

import (
	"strings"
	"testing"
)

// TestParseManifest: a release manifest as Helm stores it (documents with
// "# Source:" comments, an empty one) comes back as its objects, in order.
func TestParseManifest(t *testing.T) {
	for _, tt := range []struct {
		name     string
		manifest string
		want     string
	}{
		{"two objects and an empty document", "---\n# Source: grafana/templates/pvc.yaml\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: grafana\n---\n# Source: grafana/templates/empty.yaml\n---\n# Source: grafana/templates/deployment.yaml\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: grafana\n",
			"PersistentVolumeClaim/grafana Deployment/grafana"},
		{"nothing", "", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			objs, err := parseManifest(tt.manifest)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, o := range objs {
				got = append(got, o.GetKind()+"/"+o.GetName())
			}
			if strings.Join(got, " ") != tt.want {
				t.Errorf("got %v, want %s", got, tt.want)
			}
		})
	}
	if _, err := parseManifest("---\nkind: [unclosed\n"); err == nil {
		t.Error("a broken document parsed")
	}
}
