package migrate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/rebind-dev/rebind/pkg/app"
)

// ---------------------------------------------------------------- baseline

type baselineStep struct{ *env }

func (s baselineStep) ID() string { return "baseline" }
func (s baselineStep) Describe() string {
	if s.baseline != "" {
		return "load baseline inventory from " + s.baseline
	}
	if len(s.spec.FromPVs) > 0 {
		return fmt.Sprintf("record what the database on PersistentVolume(s) %v holds, read offline (the reference: %s does not run on them yet)", s.spec.FromPVs, s.appKind())
	}
	return fmt.Sprintf("record what %s serves (baseline for verification)", s.appKind())
}
func (s baselineStep) Precondition(context.Context) error { return nil }
func (s baselineStep) Apply(ctx context.Context) error {
	for i, o := range s.spec.Target.Ordinals {
		if b, _ := s.j.Blob(keyBaseline(i)); b != nil {
			continue
		}
		var data []byte
		var err error
		switch {
		case s.baseline != "":
			data, err = os.ReadFile(s.baseline)
		case i < len(s.spec.FromPVs):
			data, err = s.captureVolume(ctx, s.spec.FromPVs[i])
		default:
			data, err = s.checker.Capture(ctx, o.Pod)
		}
		if err != nil {
			return fmt.Errorf("baseline of pod %s: %w", o.Pod, err)
		}
		if err := s.j.SetBlob(ctx, keyBaseline(i), data); err != nil {
			return err
		}
	}
	return nil
}

// captureVolume reads the application's database on a PV offline.
func (s baselineStep) captureVolume(ctx context.Context, pvName string) ([]byte, error) {
	dc, ok := s.checker.(app.DBCapturer)
	if !ok || s.readDB == nil {
		return nil, fmt.Errorf("the database on PersistentVolume %s cannot be read offline here: pass --baseline FILE or --offline-volume-root DIR", pvName)
	}
	pv, err := s.getPV(ctx, pvName)
	if err != nil {
		return nil, err
	}
	path, done, err := s.readDB(ctx, pv)
	if err != nil {
		return nil, fmt.Errorf("reading the database on PersistentVolume %s: %w", pvName, err)
	}
	if done != nil {
		defer done()
	}
	return dc.CaptureDB(ctx, path)
}

func (s baselineStep) Check(context.Context) error {
	for i := range s.spec.Target.Ordinals {
		if b, err := s.j.Blob(keyBaseline(i)); err != nil || b == nil {
			return fmt.Errorf("baseline of ordinal %d missing", i)
		}
	}
	return nil
}
func (s baselineStep) Undo(context.Context) error { return nil }

// ---------------------------------------------------------------- verify

// VerificationError says the application lost or changed data.
type VerificationError struct {
	Verdicts []app.Verdict
}

func (e *VerificationError) Error() string {
	msg := "verification failed:"
	for _, v := range e.Verdicts {
		if !v.OK {
			msg += " " + v.Summary + ";"
		}
	}
	return msg
}

type verifyStep struct{ *env }

func (s verifyStep) ID() string { return "verify" }
func (s verifyStep) Describe() string {
	return fmt.Sprintf("verify through the %s API that every item of the baseline came through", s.appKind())
}
func (s verifyStep) Precondition(context.Context) error { return nil }
func (s verifyStep) Apply(ctx context.Context) error {
	vctx, cancel := context.WithTimeout(ctx, s.spec.Timeouts.Verify)
	defer cancel()
	s.env.verdicts = nil
	var failed bool
	for i, o := range s.spec.Target.Ordinals {
		base, err := s.j.Blob(keyBaseline(i))
		if err != nil || base == nil {
			return fmt.Errorf("baseline of ordinal %d missing from the journal", i)
		}
		if err := s.checker.Ready(vctx, o.Pod); err != nil {
			return fmt.Errorf("%s in pod %s did not become ready: %w", s.checker.Kind(), o.Pod, err)
		}
		v, err := s.checker.Verify(vctx, o.Pod, base)
		if err != nil {
			return fmt.Errorf("verifying pod %s: %w", o.Pod, err)
		}
		v.Summary = o.Pod + ": " + v.Summary
		s.env.verdicts = append(s.env.verdicts, v)
		if !v.OK {
			failed = true
		}
	}
	if failed {
		return &VerificationError{Verdicts: s.env.verdicts}
	}
	b, _ := json.Marshal(s.env.verdicts)
	return s.j.SetValue(ctx, keyVerified, string(b))
}
func (s verifyStep) Check(context.Context) error {
	if s.value(keyVerified) == "" {
		return errors.New("not verified")
	}
	return nil
}
func (s verifyStep) Undo(context.Context) error { return nil }
