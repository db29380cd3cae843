package drill

import (
	"context"
	"fmt"
	"sort"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/rebind-dev/rebind/pkg/discovery"
	"github.com/rebind-dev/rebind/pkg/kube"
)

// Targets lists the StatefulSets matching a label selector, in namespace
// (or every namespace), as drill targets sharing base's other options.
func Targets(ctx context.Context, c *kube.Clients, namespace string, allNamespaces bool, selector string, base discovery.Options) ([]discovery.Options, error) {
	if _, err := labels.Parse(selector); err != nil {
		return nil, fmt.Errorf("--selector %q: %w", selector, err)
	}
	if allNamespaces {
		namespace = metav1.NamespaceAll
	}
	list, err := c.Kube.AppsV1().StatefulSets(namespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		where := "namespace " + namespace
		if allNamespaces {
			where = "all namespaces"
		}
		return nil, fmt.Errorf("listing StatefulSets matching %q in %s: %w", selector, where, err)
	}
	var out []discovery.Options
	for _, s := range list.Items {
		o := base
		o.Namespace, o.StatefulSet, o.Release = s.Namespace, s.Name, ""
		out = append(out, o)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].StatefulSet < out[j].StatefulSet
	})
	return out, nil
}
