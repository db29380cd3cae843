package plan

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
)

type memStore map[string]StepRecord

func (m memStore) Step(id string) StepRecord { return m[id] }
func (m memStore) SetStep(_ context.Context, id string, r StepRecord) error {
	m[id] = r
	return nil
}

// fakeStep models an effect in a shared "world" so that Check sees what
// Apply and Undo really did.
type fakeStep struct {
	id       string
	world    map[string]bool
	calls    *[]string
	applyErr error
	precond  error
}

func (f *fakeStep) ID() string       { return f.id }
func (f *fakeStep) Describe() string { return "step " + f.id }
func (f *fakeStep) Precondition(context.Context) error {
	return f.precond
}
func (f *fakeStep) Apply(context.Context) error {
	*f.calls = append(*f.calls, "apply:"+f.id)
	if f.applyErr != nil {
		return f.applyErr
	}
	f.world[f.id] = true
	return nil
}
func (f *fakeStep) Check(context.Context) error {
	if !f.world[f.id] {
		return errors.New("not there")
	}
	return nil
}
func (f *fakeStep) Undo(context.Context) error {
	*f.calls = append(*f.calls, "undo:"+f.id)
	delete(f.world, f.id)
	return nil
}

func TestRunner(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name       string
		store      memStore
		world      map[string]bool
		applyErr   map[string]error
		precond    map[string]error
		undo       bool
		wantCalls  []string
		wantErrID  string
		wantStatus map[string]Status
	}{
		{
			name:       "fresh run applies every step in order",
			store:      memStore{},
			wantCalls:  []string{"apply:a", "apply:b", "apply:c"},
			wantStatus: map[string]Status{"a": Done, "b": Done, "c": Done},
		},
		{
			name:       "resume skips steps done whose effect holds",
			store:      memStore{"a": {Status: Done}, "b": {Status: Started}},
			world:      map[string]bool{"a": true},
			wantCalls:  []string{"apply:b", "apply:c"},
			wantStatus: map[string]Status{"a": Done, "b": Done, "c": Done},
		},
		{
			name:       "a done step is trusted even when later steps superseded its effect",
			store:      memStore{"a": {Status: Done}},
			wantCalls:  []string{"apply:b", "apply:c"},
			wantStatus: map[string]Status{"a": Done, "b": Done, "c": Done},
		},
		{
			name:       "failure stops the run and is recorded",
			store:      memStore{},
			applyErr:   map[string]error{"b": boom},
			wantCalls:  []string{"apply:a", "apply:b"},
			wantErrID:  "b",
			wantStatus: map[string]Status{"a": Done, "b": Failed, "c": Pending},
		},
		{
			name:       "failed precondition changes nothing",
			store:      memStore{},
			precond:    map[string]error{"a": boom},
			wantCalls:  nil,
			wantErrID:  "a",
			wantStatus: map[string]Status{"a": Pending, "b": Pending},
		},
		{
			name:       "undo reverses started and done steps last first",
			store:      memStore{"a": {Status: Done}, "b": {Status: Started}},
			world:      map[string]bool{"a": true, "b": true},
			undo:       true,
			wantCalls:  []string{"undo:b", "undo:a"},
			wantStatus: map[string]Status{"a": Undone, "b": Undone, "c": Pending},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls []string
			world := tt.world
			if world == nil {
				world = map[string]bool{}
			}
			p := &Plan{Name: "test"}
			for _, id := range []string{"a", "b", "c"} {
				p.Steps = append(p.Steps, &fakeStep{id: id, world: world, calls: &calls, applyErr: tt.applyErr[id], precond: tt.precond[id]})
			}
			var out bytes.Buffer
			r := &Runner{Store: tt.store, Out: &out}
			var err error
			if tt.undo {
				_, err = r.Undo(context.Background(), p)
			} else {
				_, err = r.Run(context.Background(), p)
			}
			if tt.wantErrID == "" && err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if tt.wantErrID != "" {
				var se *StepError
				if !errors.As(err, &se) || se.StepID != tt.wantErrID {
					t.Fatalf("want StepError for %s, got %v", tt.wantErrID, err)
				}
			}
			if strings.Join(calls, ",") != strings.Join(tt.wantCalls, ",") {
				t.Errorf("calls = %v, want %v", calls, tt.wantCalls)
			}
			for id, want := range tt.wantStatus {
				if got := tt.store.Step(id).Status; got != want {
					t.Errorf("status of %s = %q, want %q", id, got, want)
				}
			}
		})
	}
}

func TestAfterStepInterruptsLikeAKill(t *testing.T) {
	var calls []string
	world := map[string]bool{}
	p := &Plan{Name: "t"}
	for _, id := range []string{"a", "b"} {
		p.Steps = append(p.Steps, &fakeStep{id: id, world: world, calls: &calls})
	}
	store := memStore{}
	killed := errors.New("killed")
	r := &Runner{Store: store, AfterStep: func(_ context.Context, id string) error {
		if id == "a" {
			return killed
		}
		return nil
	}}
	if _, err := r.Run(context.Background(), p); !errors.Is(err, killed) {
		t.Fatalf("want killed, got %v", err)
	}
	r.AfterStep = nil
	if _, err := r.Run(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(calls, ","); got != "apply:a,apply:b" {
		t.Fatalf("resume re-applied a finished step: %s", got)
	}
}

func TestPrintMarksProgress(t *testing.T) {
	var calls []string
	p := &Plan{Name: "demo", Steps: []Step{
		&fakeStep{id: "a", world: map[string]bool{}, calls: &calls},
		&fakeStep{id: "b", world: map[string]bool{}, calls: &calls},
	}}
	var out bytes.Buffer
	Print(&out, p, memStore{"a": {Status: Done}})
	got := out.String()
	if !strings.Contains(got, "✓  1. step a") || !strings.Contains(got, "   2. step b") {
		t.Fatalf("unexpected plan print:\n%s", got)
	}
}

// batchStore counts writes to show that a step's Done record rides along
// with the next step's Started record.
type batchStore struct {
	memStore
	writes int
}

func (b *batchStore) SetStep(ctx context.Context, id string, r StepRecord) error {
	b.writes++
	return b.memStore.SetStep(ctx, id, r)
}

func (b *batchStore) SetSteps(_ context.Context, recs map[string]StepRecord) error {
	b.writes++
	for id, r := range recs {
		b.memStore[id] = r
	}
	return nil
}

func TestBatchStoreHalvesWritesAndKeepsRecords(t *testing.T) {
	for _, tc := range []struct {
		name       string
		failAt     string
		wantWrites int
		want       map[string]Status
	}{
		{"three steps: n+1 writes, not 2n", "", 4, map[string]Status{"a": Done, "b": Done, "c": Done}},
		{"a failure still records the previous step done", "b", 3, map[string]Status{"a": Done, "b": Failed, "c": Pending}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var calls []string
			world := map[string]bool{}
			p := &Plan{Name: "t"}
			for _, id := range []string{"a", "b", "c"} {
				var err error
				if id == tc.failAt {
					err = errors.New("boom")
				}
				p.Steps = append(p.Steps, &fakeStep{id: id, world: world, calls: &calls, applyErr: err})
			}
			store := &batchStore{memStore: memStore{}}
			_, _ = (&Runner{Store: store}).Run(context.Background(), p)
			if store.writes != tc.wantWrites {
				t.Errorf("writes = %d, want %d", store.writes, tc.wantWrites)
			}
			for id, want := range tc.want {
				if got := store.Step(id).Status; got != want {
					t.Errorf("%s = %q, want %q", id, got, want)
				}
			}
		})
	}
}

// TestGuardStopsBeforeTheNextChange: once the guard trips (the lease is
// lost) during a step, the runner starts no further step, writes no record
// (not even the finished step's Done, so a resume re-applies that
// idempotent step) and undoes nothing; a resume then finishes the plan.
func TestGuardStopsBeforeTheNextChange(t *testing.T) {
	lost := errors.New("lease lost")
	for _, tc := range []struct {
		name    string
		store   func() Store
		tripAt  string // the guard trips while this step applies
		wantRun string
		want    map[string]Status
	}{
		{"plain store", func() Store { return memStore{} }, "b", "apply:a,apply:b", map[string]Status{"a": Done, "b": Started, "c": Pending}},
		{"batch store", func() Store { return &batchStore{memStore: memStore{}} }, "b", "apply:a,apply:b", map[string]Status{"a": Done, "b": Started, "c": Pending}},
		{"first step", func() Store { return memStore{} }, "a", "apply:a", map[string]Status{"a": Started, "b": Pending, "c": Pending}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var calls []string
			world := map[string]bool{}
			var guardErr error
			p := &Plan{Name: "t"}
			for _, id := range []string{"a", "b", "c"} {
				p.Steps = append(p.Steps, &guardTrippingStep{fakeStep{id: id, world: world, calls: &calls}, id == tc.tripAt, &guardErr, lost})
			}
			store := tc.store()
			r := &Runner{Store: store, Guard: func() error { return guardErr }}
			if _, err := r.Run(context.Background(), p); !errors.Is(err, lost) {
				t.Fatalf("want the guard's error, got %v", err)
			}
			if got := strings.Join(calls, ","); got != tc.wantRun {
				t.Fatalf("calls = %s, want %s", got, tc.wantRun)
			}
			for id, want := range tc.want {
				if got := store.Step(id).Status; got != want {
					t.Errorf("%s = %q, want %q", id, got, want)
				}
			}
			if _, err := r.Undo(context.Background(), p); !errors.Is(err, lost) || strings.Contains(strings.Join(calls, ","), "undo") {
				t.Fatalf("undo without the lease: %v, calls %v", err, calls)
			}
			guardErr = nil
			if _, err := (&Runner{Store: store}).Run(context.Background(), p); err != nil {
				t.Fatalf("resume: %v", err)
			}
			for _, id := range []string{"a", "b", "c"} {
				if store.Step(id).Status != Done {
					t.Errorf("after resume %s = %q", id, store.Step(id).Status)
				}
			}
		})
	}
}

type guardTrippingStep struct {
	fakeStep
	trip   bool
	guard  *error
	reason error
}

func (g *guardTrippingStep) Apply(ctx context.Context) error {
	if g.trip {
		*g.guard = g.reason
	}
	return g.fakeStep.Apply(ctx)
}
