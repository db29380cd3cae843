package migrate_test

import (
	"context"
	"errors"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"

	"github.com/rebind-dev/rebind/e2e/e2eutil"
	"github.com/rebind-dev/rebind/e2e/fixtures"
	"github.com/rebind-dev/rebind/pkg/events"
	"github.com/rebind-dev/rebind/pkg/migrate"
)

// rebindEvents lists the Events rebind recorded on the workload name,
// oldest first.
func rebindEvents(t *testing.T, ns, name string) []corev1.Event {
	t.Helper()
	list, err := sb.Kube.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{
		FieldSelector: fields.Set{"involvedObject.name": name, "source": "rebind"}.String()})
	if err != nil {
		t.Fatal(err)
	}
	evs := list.Items
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].FirstTimestamp.Before(&evs[j].FirstTimestamp) })
	return evs
}

// assertEvents checks the reasons in order (each once), the uid each is
// attached to, and that no message carries a secret value.
func assertEvents(t *testing.T, e *grafanaEnv, evs []corev1.Event, want []string, uids map[string]types.UID) {
	t.Helper()
	var got []string
	for _, ev := range evs {
		got = append(got, ev.Reason)
		if u, ok := uids[ev.Reason]; ok && ev.InvolvedObject.UID != u {
			t.Errorf("%s on uid %s, want %s", ev.Reason, ev.InvolvedObject.UID, u)
		}
		if ev.InvolvedObject.Kind != "StatefulSet" || !strings.Contains(ev.Message, "run ") {
			t.Errorf("event %s: %s %q", ev.Reason, ev.InvolvedObject.Kind, ev.Message)
		}
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("events %v, want %v", got, want)
	}
	sec, err := sb.Kube.CoreV1().Secrets(e.Rel.Namespace).Get(context.Background(), e.Rel.FullName(), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		for k, v := range sec.Data {
			if len(v) > 0 && strings.Contains(ev.Message, string(v)) && k != "admin-user" {
				t.Errorf("event %s carries the value of secret key %s: %q", ev.Reason, k, ev.Message)
			}
		}
	}
}

// TestEventsOfMigrationAndRollback drives the binary: a migration records
// started, outage begun and verified on the StatefulSet (the last on the
// recreated one, so `kubectl describe` shows it), `rebind rollback` records
// rolled back.
func TestEventsOfMigrationAndRollback(t *testing.T) {
	e2eutil.NeedSandbox(t)
	bin := e2eutil.BuildRebind(t)
	e := deployGrafana(t, fixtures.Release{Name: "grafana", Replicas: 1}, 4)
	ns, name := e.Rel.Namespace, e.Rel.FullName()
	old, err := sb.Kube.AppsV1().StatefulSets(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r := runRebind(t, bin, "migrate", "-n", ns, "--release", "grafana", "--strategy", "restore", "--to-storage-class", "premium", "--wait-timeout", "1m")
	if r.Code != 0 {
		t.Fatalf("migrate: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	cur, err := sb.Kube.AppsV1().StatefulSets(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cur.UID == old.UID {
		t.Fatal("the StatefulSet was not recreated")
	}
	uids := map[string]types.UID{migrate.ReasonStarted: old.UID, migrate.ReasonOutageBegan: old.UID, migrate.ReasonVerified: cur.UID}
	evs := rebindEvents(t, ns, name)
	assertEvents(t, e, evs, []string{migrate.ReasonStarted, migrate.ReasonOutageBegan, migrate.ReasonVerified}, uids)
	if v := evs[2]; v.Type != corev1.EventTypeNormal || !strings.Contains(v.Message, "every dashboard verified") || !strings.Contains(v.Message, "outage") {
		t.Errorf("verified event: %s %q", v.Type, v.Message)
	}

	if r := runRebind(t, bin, "rollback", "-n", ns, "--statefulset", name); r.Code != 0 {
		t.Fatalf("rollback: exit %d\n%s", r.Code, r.Stderr)
	}
	back, err := sb.Kube.AppsV1().StatefulSets(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	uids[migrate.ReasonRolledBack] = back.UID
	assertEvents(t, e, rebindEvents(t, ns, name),
		[]string{migrate.ReasonStarted, migrate.ReasonOutageBegan, migrate.ReasonVerified, migrate.ReasonRolledBack}, uids)
}

// TestEventsOfAutomaticRollback: a restore that lost dashboards records
// the failed verification and the automatic rollback, as warnings.
func TestEventsOfAutomaticRollback(t *testing.T) {
	e2eutil.NeedSandbox(t)
	e := deployGrafana(t, fixtures.Release{Name: "grafana", Replicas: 1}, 5)
	orig := e.BoundPV(0).Name
	rec := events.New(sb.Kube, "rebind")
	m := e.Migrator()
	m.Events = rec
	m.AfterStep = e2eutil.DamageRestoredVolume(sb, e.Rel.Namespace, orig, func(dir string) error {
		return e2eutil.DeleteSomeDashboards(filepath.Join(dir, "grafana.db"), 2)
	})
	_, err := m.Run(e.Ctx, e.options(migrate.Restore), migrate.Apply)
	rec.Close(10 * time.Second)
	var rb *migrate.RolledBackError
	if !errors.As(err, &rb) {
		t.Fatalf("want a rollback, got %v", err)
	}
	evs := rebindEvents(t, e.Rel.Namespace, e.Rel.FullName())
	assertEvents(t, e, evs, []string{migrate.ReasonStarted, migrate.ReasonOutageBegan, migrate.ReasonVerificationFailed, migrate.ReasonRolledBack}, nil)
	for _, ev := range evs[2:] {
		if ev.Type != corev1.EventTypeWarning {
			t.Errorf("%s is %s, want Warning", ev.Reason, ev.Type)
		}
	}
	if want := e.Rel.Pod(0) + ": 2 missing, 0 changed, 0 moved of " + itoa(e.Dashboards[0]) + " dashboards"; !strings.Contains(evs[2].Message, want) {
		t.Errorf("verification failure message %q lacks %q", evs[2].Message, want)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
