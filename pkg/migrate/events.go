package migrate

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/rebind-dev/rebind/pkg/app"
)

// EventRecorder records Kubernetes Events (events.Recorder: client-go's
// broadcaster, asynchronous, so recording never slows the outage).
type EventRecorder interface {
	Event(obj runtime.Object, eventType, reason, message string)
}

// Event reasons on the workload, one per phase of a run, so that `kubectl
// describe` (and event exporters) tell the story. A StatefulSet is
// recreated with a new uid during the swap: the Events before it belong to
// the old object, so `kubectl get events --field-selector
// involvedObject.name=<name>` shows the whole run. Messages name the run,
// the strategy, volumes and counts, never a credential or env value.
const (
	ReasonStarted            = "RebindMigrationStarted"
	ReasonResumed            = "RebindMigrationResumed"
	ReasonOutageBegan        = "RebindOutageBegan"
	ReasonVerified           = "RebindVerified"
	ReasonVerificationFailed = "RebindVerificationFailed"
	ReasonRolledBack         = "RebindRolledBack"
	ReasonFailed             = "RebindMigrationFailed"
)

// event records on the workload as discovered (no API call: this may run
// during the outage).
func (m *Migrate) event(spec *Spec, eventType, reason, format string, args ...any) {
	if m.Events == nil || spec == nil || spec.Target == nil {
		return
	}
	m.Events.Event(workloadObject(spec), eventType, reason, fmt.Sprintf(format, args...))
}

// eventOnCurrent records on the workload as it is now (a StatefulSet the
// swap recreated has a new uid), or as discovered when it cannot be read.
func (m *Migrate) eventOnCurrent(ctx context.Context, spec *Spec, eventType, reason, format string, args ...any) {
	if m.Events == nil || spec == nil || spec.Target == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	obj := workloadObject(spec)
	t := spec.Target
	if t.IsDeployment() {
		if d, err := m.Clients.Kube.AppsV1().Deployments(t.Namespace).Get(ctx, t.Name(), metav1.GetOptions{}); err == nil {
			obj = d
		}
	} else if s, err := m.Clients.Kube.AppsV1().StatefulSets(t.Namespace).Get(ctx, t.Name(), metav1.GetOptions{}); err == nil {
		obj = s
	}
	m.Events.Event(obj, eventType, reason, fmt.Sprintf(format, args...))
}

func workloadObject(spec *Spec) runtime.Object {
	if spec.Target.IsDeployment() {
		return spec.Target.Deployment
	}
	return spec.Target.StatefulSet
}

// onStep turns the plan's progress into phase Events.
func (m *Migrate) onStep(spec *Spec) func(id string, done bool) {
	return func(id string, done bool) {
		switch {
		case id == "stop-pods" && !done:
			m.event(spec, corev1.EventTypeNormal, ReasonOutageBegan, "run %s: stopping %s to swap its volumes (%s); Grafana is down until the redeployed pods are Ready", spec.RunID, spec.Target.Name(), spec.Strategy)
		}
	}
}

// verdictSummary is the verdicts' one-line summaries: counts per pod.
func verdictSummary(vs []app.Verdict) string {
	parts := make([]string, 0, len(vs))
	for _, v := range vs {
		parts = append(parts, v.Summary)
	}
	return strings.Join(parts, "; ")
}
