package report

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestDurationJSON(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    time.Duration
		wantErr string
	}{
		{"written by rebind", `{"seconds":1.5,"human":"1.5s"}`, 1500 * time.Millisecond, ""},
		{"sub-millisecond", `{"seconds":0.000250}`, 250 * time.Microsecond, ""},
		{"zero", `{"seconds":0}`, 0, ""},
		{"a bare number is not the format", `1.5`, 0, "want"},
		{"no seconds", `{"human":"1s"}`, 0, "no seconds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var d Duration
			err := json.Unmarshal([]byte(tt.in), &d)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || time.Duration(d) != tt.want {
				t.Fatalf("got %v, %v; want %v", time.Duration(d), err, tt.want)
			}
		})
	}
}

func TestReportRoundTrip(t *testing.T) {
	in := Report{Operation: "migrate", Outcome: "succeeded", Duration: Duration(2345 * time.Millisecond), Downtime: Duration(87 * time.Millisecond)}
	b, err := json.Marshal(&in)
	if err != nil {
		t.Fatal(err)
	}
	var out Report
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if out.Duration != in.Duration || out.Downtime != in.Downtime || out.Outcome != in.Outcome {
		t.Fatalf("round trip changed the report: %+v -> %+v", in, out)
	}
}
