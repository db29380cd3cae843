package migrate_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rebind-dev/rebind/e2e/e2eutil"
	"github.com/rebind-dev/rebind/e2e/fixtures"
	"github.com/rebind-dev/rebind/pkg/journal"
	"github.com/rebind-dev/rebind/pkg/migrate"
	"github.com/rebind-dev/rebind/pkg/report"
	"github.com/rebind-dev/rebind/pkg/workload"
)

// Values planted in the workload; none may show anywhere but where the
// user put them (and, for the literal, the journal's Secret).
const (
	plantedLiteral = "planted-literal-XYZ" // env GF_DATABASE_PASSWORD of the StatefulSet
	plantedAdmin   = "planted-admin-XYZ"   // admin-password in the chart's Secret
	plantedApplied = "planted-applied-XYZ" // only in the last-applied-configuration annotation
	literalEnv     = "GF_DATABASE_PASSWORD"
)

var planted = []string{plantedLiteral, plantedAdmin, plantedApplied}

// deployWithSecrets deploys release "grafana" like the chart, plus a
// literal env password and kubectl's last-applied-configuration as a
// `kubectl apply` of the StatefulSet would leave it, and seeds it.
func deployWithSecrets(t *testing.T) *grafanaEnv {
	t.Helper()
	g := e2eutil.NewGrafana(t, sb, fixtures.Release{Name: "grafana", Replicas: 1, Password: plantedAdmin})
	secret, svcs, w := g.Rel.Objects()
	sts := w.StatefulSet
	c := &sts.Spec.Template.Spec.Containers[0]
	c.Env = append(c.Env, corev1.EnvVar{Name: literalEnv, Value: plantedLiteral})
	applied, err := json.Marshal(map[string]any{
		"apiVersion": "apps/v1", "kind": "StatefulSet",
		"metadata": map[string]any{"name": sts.Name, "namespace": sts.Namespace},
		"spec": map[string]any{"template": map[string]any{"spec": map[string]any{"containers": []any{map[string]any{
			"name": c.Name, "env": []any{
				map[string]any{"name": literalEnv, "value": plantedLiteral},
				map[string]any{"name": "GF_SMTP_PASSWORD", "value": plantedApplied},
			}}}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	sts.Annotations[corev1.LastAppliedConfigAnnotation] = string(applied)
	ctx, k := g.Ctx, sb.Kube
	if _, err := k.CoreV1().Secrets(g.Rel.Namespace).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, s := range svcs {
		if _, err := k.CoreV1().Services(g.Rel.Namespace).Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := k.AppsV1().StatefulSets(g.Rel.Namespace).Create(ctx, sts, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	g.Seed(e2eutil.Seeding(4))
	return &grafanaEnv{g}
}

// assertClean fails when text shows any planted value.
func assertClean(t *testing.T, where, text string) {
	t.Helper()
	for _, p := range planted {
		if strings.Contains(text, p) {
			i := strings.Index(text, p)
			from, to := max(0, i-200), min(len(text), i+len(p)+50)
			t.Errorf("%s shows planted value %q: …%s…", where, p, text[from:to])
		}
	}
}

// assertNamespaceClean checks what anyone with `get configmaps` or `list
// events` reads: every ConfigMap of the namespace (the journal's data,
// binary blobs uncompressed, labels and annotations) and every Event.
func assertNamespaceClean(t *testing.T, e *grafanaEnv) {
	t.Helper()
	ns := e.Rel.Namespace
	cms, err := sb.Kube.CoreV1().ConfigMaps(ns).List(e.Ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	journals := 0
	for _, cm := range cms.Items {
		if cm.Name == journal.Name(e.Rel.FullName()) {
			journals++
		}
		raw, _ := json.Marshal(cm)
		text := string(raw)
		for k, b := range cm.BinaryData {
			text += "\n" + string(b) // base64 in the JSON above
			if strings.HasSuffix(k, ".gz") {
				zr, err := gzip.NewReader(bytes.NewReader(b))
				if err != nil {
					t.Fatalf("ConfigMap %s key %s: %v", cm.Name, k, err)
				}
				plain, err := io.ReadAll(zr)
				if err != nil {
					t.Fatal(err)
				}
				text += "\n" + string(plain)
			}
		}
		assertClean(t, "ConfigMap "+cm.Name, text)
		if strings.Contains(text, "last-applied-configuration") {
			t.Errorf("ConfigMap %s holds a last-applied-configuration", cm.Name)
		}
	}
	if journals != 1 {
		t.Errorf("%d journal ConfigMaps, want 1", journals)
	}
	evs, err := sb.Kube.CoreV1().Events(ns).List(e.Ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(evs)
	assertClean(t, "the namespace's Events", string(raw))
}

// assertJournalSecret checks the copy a rollback recreates from: a Secret
// owned by nothing, with the literal value, and without the admin
// password, which stays in the chart's Secret only.
func assertJournalSecret(t *testing.T, e *grafanaEnv) {
	t.Helper()
	s, err := sb.Kube.CoreV1().Secrets(e.Rel.Namespace).Get(e.Ctx, journal.Name(e.Rel.FullName()), metav1.GetOptions{})
	if err != nil {
		t.Fatalf("journal Secret: %v", err)
	}
	if s.Type != corev1.SecretTypeOpaque || len(s.OwnerReferences) != 0 || s.Labels[journal.LabelManagedBy] != journal.ManagedBy {
		t.Errorf("journal Secret: type %s, owners %v, labels %v", s.Type, s.OwnerReferences, s.Labels)
	}
	var all strings.Builder
	for _, v := range s.Data {
		all.Write(v)
	}
	if !strings.Contains(all.String(), plantedLiteral) {
		t.Errorf("journal Secret lacks the literal env value it must recreate")
	}
	if strings.Contains(all.String(), plantedAdmin) {
		t.Errorf("journal Secret copies the admin password of the chart's Secret")
	}
	// Nor is anything copied into another Secret.
	list, err := sb.Kube.CoreV1().Secrets(e.Rel.Namespace).List(e.Ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range list.Items {
		if o.Name == e.Rel.FullName() || o.Name == s.Name {
			continue
		}
		raw, _ := json.Marshal(o) // Data is base64 in JSON: add it decoded
		text := string(raw)
		for _, v := range o.Data {
			text += "\n" + string(v)
		}
		assertClean(t, "Secret "+o.Name, text)
	}
}

// assertRecreatedWithLiteral checks that the live StatefulSet (recreated
// by rebind, uid differs from before) still has the literal env value and
// the last-applied annotation: it was recreated from the Secret's copy.
func assertRecreatedWithLiteral(t *testing.T, e *grafanaEnv, before *appsv1.StatefulSet) {
	t.Helper()
	sts, err := sb.Kube.AppsV1().StatefulSets(e.Rel.Namespace).Get(e.Ctx, e.Rel.FullName(), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sts.UID == before.UID {
		t.Fatalf("StatefulSet %s was not recreated", sts.Name)
	}
	got := ""
	for _, env := range sts.Spec.Template.Spec.Containers[0].Env {
		if env.Name == literalEnv {
			got = env.Value
		}
	}
	if got != plantedLiteral {
		t.Errorf("recreated StatefulSet has %s=%q, want the original literal", literalEnv, got)
	}
	if sts.Annotations[corev1.LastAppliedConfigAnnotation] != before.Annotations[corev1.LastAppliedConfigAnnotation] {
		t.Errorf("recreated StatefulSet lost its last-applied-configuration")
	}
}

func liveSTS(t *testing.T, e *grafanaEnv) *appsv1.StatefulSet {
	t.Helper()
	sts, err := sb.Kube.AppsV1().StatefulSets(e.Rel.Namespace).Get(e.Ctx, e.Rel.FullName(), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return sts
}

// syncBuffer collects what concurrent writers (zap, progress) print.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// recordingMigrator prints progress and debug logs into out as well as to
// the test log.
func recordingMigrator(t *testing.T, e *grafanaEnv, out *syncBuffer) *migrate.Migrate {
	m := e.Migrator()
	m.Out = io.MultiWriter(out, e2eutil.TestWriter{T: t})
	m.Log = zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(out), zap.DebugLevel))
	return m
}

func reportJSON(t *testing.T, rep *report.Report) string {
	t.Helper()
	raw, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}

// TestSecretsStayOutOfTheJournal plants a literal env password, an admin
// password (chart Secret) and a last-applied-configuration and migrates and
// rolls back: no planted value shows in the journal ConfigMap, the report,
// the output or logs (debug level) or the namespace's Events, and every
// StatefulSet rebind recreates still has the literal value, taken from the
// journal's Secret.
func TestSecretsStayOutOfTheJournal(t *testing.T) {
	e2eutil.NeedSandbox(t)
	t.Run("migrate and roll back", func(t *testing.T) {
		e := deployWithSecrets(t)
		orig := liveSTS(t, e)
		var out syncBuffer
		o := e.options(migrate.Restore)
		o.ToClass = "premium"
		rep, err := recordingMigrator(t, e, &out).Run(e.Ctx, o, migrate.Apply)
		if err != nil {
			t.Fatal(err)
		}
		e.AssertVerified(rep)
		assertClean(t, "the migration's report", reportJSON(t, rep))
		assertNamespaceClean(t, e)
		assertJournalSecret(t, e)
		assertRecreatedWithLiteral(t, e, orig)

		migrated := liveSTS(t, e)
		rep, err = recordingMigrator(t, e, &out).Rollback(e.Ctx, e.Rel.Namespace, e.Rel.FullName())
		if err != nil {
			t.Fatal(err)
		}
		if rep.Outcome != report.RolledBack {
			t.Fatalf("rollback outcome %s", rep.Outcome)
		}
		assertClean(t, "the rollback's report", reportJSON(t, rep))
		assertClean(t, "progress and debug logs", out.String())
		assertNamespaceClean(t, e)
		assertRecreatedWithLiteral(t, e, migrated)

		// The next run replaces the finished journal and its Secret.
		first := rep.RunID
		rep, err = recordingMigrator(t, e, &out).Run(e.Ctx, o, migrate.Apply)
		if err != nil {
			t.Fatal(err)
		}
		s, err := sb.Kube.CoreV1().Secrets(e.Rel.Namespace).Get(e.Ctx, journal.Name(e.Rel.FullName()), metav1.GetOptions{})
		if err != nil || s.Labels[journal.LabelRun] != rep.RunID || rep.RunID == first {
			t.Fatalf("journal Secret after the next run: %v %v (runs %s, %s)", s.Labels, err, first, rep.RunID)
		}
		assertNamespaceClean(t, e)
	})

	t.Run("rollback by a new process after the original StatefulSet is gone", func(t *testing.T) {
		e := deployWithSecrets(t)
		orig := liveSTS(t, e)
		var out syncBuffer
		m := recordingMigrator(t, e, &out)
		killed := errors.New("killed by test")
		m.AfterStep = func(_ context.Context, id string) error {
			if id == "stop-pods" {
				return killed
			}
			return nil
		}
		o := e.options(migrate.Restore)
		o.ToClass = "premium"
		rep, err := m.Run(e.Ctx, o, migrate.Apply)
		if !errors.Is(err, killed) {
			t.Fatalf("want killed, got %v", err)
		}
		assertClean(t, "the killed run's report", reportJSON(t, rep))
		if _, err := sb.Kube.AppsV1().StatefulSets(e.Rel.Namespace).Get(e.Ctx, e.Rel.FullName(), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Fatalf("the original StatefulSet should be gone: %v", err)
		}
		assertNamespaceClean(t, e)
		rep, err = recordingMigrator(t, e, &out).Rollback(e.Ctx, e.Rel.Namespace, e.Rel.FullName())
		if err != nil {
			t.Fatal(err)
		}
		assertClean(t, "the rollback's report", reportJSON(t, rep))
		assertClean(t, "progress and debug logs", out.String())
		assertNamespaceClean(t, e)
		assertRecreatedWithLiteral(t, e, orig)
		if err := workload.WaitReady(e.Ctx, sb.Kube, e.Rel.Namespace, e.Rel.FullName(), time.Minute); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("journal of an older rebind (format 1, no Secret) resumes and rolls back", func(t *testing.T) {
		e := deployWithSecrets(t)
		orig := liveSTS(t, e)
		m := e.Migrator()
		killed := errors.New("killed by test")
		m.AfterStep = func(_ context.Context, id string) error {
			if id == "delete-statefulset" {
				return killed
			}
			return nil
		}
		o := e.options(migrate.Restore)
		o.ToClass = "premium"
		if _, err := m.Run(e.Ctx, o, migrate.Apply); !errors.Is(err, killed) {
			t.Fatalf("want killed, got %v", err)
		}
		downgradeJournal(t, e)
		rep, err := e.Migrator().Run(e.Ctx, o, migrate.Apply)
		if err != nil {
			t.Fatal(err)
		}
		e.AssertVerified(rep)
		assertRecreatedWithLiteral(t, e, orig)
		migrated := liveSTS(t, e)
		if _, err := e.Migrator().Rollback(e.Ctx, e.Rel.Namespace, e.Rel.FullName()); err != nil {
			t.Fatal(err)
		}
		assertRecreatedWithLiteral(t, e, migrated)
		j, err := journal.Load(e.Ctx, sb.Kube, e.Rel.Namespace, e.Rel.FullName())
		if err != nil || j.Record().FormatVersion != 1 {
			t.Fatalf("a resumed format-1 journal must stay format 1 (an older rebind may finish it): %v", err)
		}
	})

	t.Run("binary, -o json, debug logs", func(t *testing.T) {
		bin := e2eutil.BuildRebind(t)
		e := deployWithSecrets(t)
		orig := liveSTS(t, e)
		ns := e.Rel.Namespace
		r := runRebind(t, bin, "--log-level", "debug", "migrate", "-n", ns, "--release", e.Rel.Name, "--strategy", "restore", "--to-storage-class", "premium",
			"-o", "json", "--wait-timeout", "1m", "--grafana-pod-url", e.Rel.Pod(0)+"="+sb.PodURL(ns, e.Rel.Pod(0)))
		if r.Code != 0 {
			t.Fatalf("migrate: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
		}
		e.AssertVerified(r.Report(t))
		assertClean(t, "migrate's stdout (JSON report)", r.Stdout)
		assertClean(t, "migrate's stderr (progress and debug logs)", r.Stderr)
		if !strings.Contains(r.Stderr, "DEBUG") {
			t.Errorf("no debug log line on stderr: the check above proves less than it claims\n%s", r.Stderr)
		}
		assertNamespaceClean(t, e)
		assertJournalSecret(t, e)
		assertRecreatedWithLiteral(t, e, orig)

		migrated := liveSTS(t, e)
		r = runRebind(t, bin, "--log-level", "debug", "rollback", "-n", ns, "--statefulset", e.Rel.FullName(), "-o", "json")
		if r.Code != 0 {
			t.Fatalf("rollback: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
		}
		if rep := r.Report(t); rep.Outcome != report.RolledBack {
			t.Fatalf("rollback outcome %s", rep.Outcome)
		}
		assertClean(t, "rollback's stdout (JSON report)", r.Stdout)
		assertClean(t, "rollback's stderr", r.Stderr)
		assertNamespaceClean(t, e)
		assertRecreatedWithLiteral(t, e, migrated)
	})
}

// downgradeJournal rewrites the journal as rebind before the Secret wrote
// it: format 1, the whole spec (target with its literal env values) in the
// ConfigMap, no Secret.
func downgradeJournal(t *testing.T, e *grafanaEnv) {
	t.Helper()
	ctx, ns, name := e.Ctx, e.Rel.Namespace, journal.Name(e.Rel.FullName())
	cms := sb.Kube.CoreV1().ConfigMaps(ns)
	cm, err := cms.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var rec map[string]json.RawMessage
	if err := json.Unmarshal([]byte(cm.Data["journal.json"]), &rec); err != nil {
		t.Fatal(err)
	}
	var spec map[string]json.RawMessage
	if err := json.Unmarshal(rec["spec"], &spec); err != nil {
		t.Fatal(err)
	}
	s, err := sb.Kube.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	spec["target"] = s.Data["target.json"]
	rec["spec"], _ = json.Marshal(spec)
	rec["formatVersion"] = json.RawMessage("1")
	delete(rec, "secret")
	raw, _ := json.MarshalIndent(rec, "", "  ")
	cm.Data["journal.json"] = string(raw)
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := sb.Kube.CoreV1().Secrets(ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
}
