// Package report renders what a run did: a JSON document for machines, a
// short summary for people, and Prometheus text metrics for drills.
package report

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/rebind-dev/rebind/pkg/app"
	"github.com/rebind-dev/rebind/pkg/plan"
)

// Outcome of a run.
const (
	Succeeded  = "succeeded"
	RolledBack = "rolled-back"
	Failed     = "failed"
	Planned    = "planned"
	// Unverified: the run did what it was asked but could compare no
	// dashboard (nothing to compare against, or it stopped before the
	// application ran); never reported as a pass.
	Unverified = "unverified"
)

// Volume describes one ordinal's volume before or after.
type Volume struct {
	Ordinal       int    `json:"ordinal"`
	Claim         string `json:"claim"`
	PV            string `json:"pv"`
	StorageClass  string `json:"storageClass"`
	Capacity      string `json:"capacity"`
	ReclaimPolicy string `json:"reclaimPolicy"`
}

// Report is the JSON document written with -o json.
type Report struct {
	Operation     string         `json:"operation"`
	RunID         string         `json:"runID"`
	Target        string         `json:"target"`
	Strategy      string         `json:"strategy,omitempty"`
	Outcome       string         `json:"outcome"`
	StartedAt     time.Time      `json:"startedAt"`
	FinishedAt    time.Time      `json:"finishedAt"`
	Duration      Duration       `json:"duration"`
	Downtime      Duration       `json:"downtime"`
	Steps         []plan.Result  `json:"steps"`
	VolumesBefore []Volume       `json:"volumesBefore,omitempty"`
	VolumesAfter  []Volume       `json:"volumesAfter,omitempty"`
	Verification  []app.Verdict  `json:"verification,omitempty"`
	HelmValues    map[string]any `json:"helmValues,omitempty"`
	Notes         []string       `json:"notes,omitempty"`
	Warnings      []string       `json:"warnings,omitempty"`     // what the user must act on
	VeleroBackup  string         `json:"veleroBackup,omitempty"` // Backup taken before the first change
	Leftovers     []string       `json:"leftovers,omitempty"`
	Error         string         `json:"error,omitempty"`
}

// Duration marshals as seconds with a human string beside it.
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]any{"seconds": time.Duration(d).Seconds(), "human": time.Duration(d).Round(time.Millisecond).String()})
}

// UnmarshalJSON reads the seconds back, so that tools (and tests) can load a
// report rebind wrote; the human string is only for people.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var v struct {
		Seconds *float64 `json:"seconds"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return fmt.Errorf("duration: want {\"seconds\": N}: %w", err)
	}
	if v.Seconds == nil {
		return fmt.Errorf("duration %s: no seconds", b)
	}
	*d = Duration(time.Duration(*v.Seconds * float64(time.Second)).Round(time.Microsecond))
	return nil
}

// WriteJSON writes the report as indented JSON.
// End stamps the report's end and duration and records err, returning
// both: the last line of an operation that reports as it goes.
func (r *Report) End(err error) (*Report, error) {
	r.FinishedAt = time.Now()
	r.Duration = Duration(r.FinishedAt.Sub(r.StartedAt))
	if err != nil {
		r.Error = err.Error()
	}
	return r, err
}

func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteSummary writes the short human summary printed after the steps.
func (r *Report) WriteSummary(w io.Writer) {
	fmt.Fprintf(w, "\n%s %s of %s: %s in %s", r.Operation, r.Strategy, r.Target, strings.ToUpper(r.Outcome), time.Duration(r.Duration).Round(100*time.Millisecond))
	if r.Downtime > 0 {
		fmt.Fprintf(w, " (downtime %s)", time.Duration(r.Downtime).Round(100*time.Millisecond))
	}
	fmt.Fprintln(w)
	for _, v := range r.Verification {
		mark := "✓"
		if !v.OK {
			mark = "✗"
		}
		fmt.Fprintf(w, "  %s %s\n", mark, v.Summary)
	}
	if len(r.VolumesAfter) > 0 {
		fmt.Fprintln(w, "  volumes:")
		before := map[int]Volume{}
		for _, v := range r.VolumesBefore {
			before[v.Ordinal] = v
		}
		for _, v := range r.VolumesAfter {
			b := before[v.Ordinal]
			fmt.Fprintf(w, "    %s: %s (%s, %s) -> %s (%s, %s, %s)\n", v.Claim, orDash(b.PV), orDash(b.StorageClass), orDash(b.ReclaimPolicy), v.PV, v.StorageClass, v.Capacity, v.ReclaimPolicy)
		}
	}
	if len(r.HelmValues) > 0 {
		fmt.Fprintln(w, "  Helm values that keep the next `helm upgrade` consistent:")
		writeValues(w, r.HelmValues, "    ")
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
	for _, n := range r.Warnings {
		fmt.Fprintf(w, "  WARNING: %s\n", n)
	}
	for _, l := range r.Leftovers {
		fmt.Fprintf(w, "  kept: %s\n", l)
	}
	if r.Error != "" {
		fmt.Fprintf(w, "  error: %s\n", r.Error)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// writeValues prints nested maps as YAML, which is all Helm values need.
func writeValues(w io.Writer, m map[string]any, indent string) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		switch v := m[k].(type) {
		case map[string]any:
			fmt.Fprintf(w, "%s%s:\n", indent, k)
			writeValues(w, v, indent+"  ")
		case string:
			fmt.Fprintf(w, "%s%s: %q\n", indent, k, v)
		default:
			fmt.Fprintf(w, "%s%s: %v\n", indent, k, v)
		}
	}
}

// ValuesYAML renders Helm values as a YAML document.
func ValuesYAML(m map[string]any) string {
	var b strings.Builder
	b.WriteString("# written by rebind: merge into your Grafana release values\n")
	writeValues(&b, m, "")
	return b.String()
}
