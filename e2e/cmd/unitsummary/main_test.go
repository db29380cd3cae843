package main

import (
	"strings"
	"testing"
)

func TestSummarize(t *testing.T) {
	const pkg = `{"Action":"start","Package":"p"}`
	tests := []struct {
		name     string
		events   []string
		want     []string
		wantCode int
	}{
		{"all skipped is not ok", []string{pkg,
			`{"Action":"run","Package":"p","Test":"TestA"}`,
			`{"Action":"output","Package":"p","Test":"TestA","Output":"    a_test.go:9: needs the e2e sandbox\n"}`,
			`{"Action":"skip","Package":"p","Test":"TestA"}`,
			`{"Action":"skip","Package":"p","Test":"TestB"}`,
			`{"Action":"pass","Package":"p","Elapsed":0.1}`,
		}, []string{"skip\tp\tall 2 tests skipped: needs the e2e sandbox"}, 0},
		{"passes with skips", []string{pkg,
			`{"Action":"pass","Package":"p","Test":"TestA"}`,
			`{"Action":"pass","Package":"p","Test":"TestA/sub"}`,
			`{"Action":"skip","Package":"p","Test":"TestB"}`,
			`{"Action":"pass","Package":"p","Elapsed":0.25}`,
		}, []string{"ok\tp\t0.250s (1 passed, 1 skipped)"}, 0},
		{"failure shows its output", []string{pkg,
			`{"Action":"output","Package":"p","Test":"TestA","Output":"    a_test.go:3: boom\n"}`,
			`{"Action":"fail","Package":"p","Test":"TestA"}`,
			`{"Action":"pass","Package":"p","Test":"TestB"}`,
			`{"Action":"fail","Package":"p","Elapsed":0.5}`,
		}, []string{"a_test.go:3: boom", "FAIL\tp\t0.500s"}, 1},
		{"no test files are left out", []string{`{"Action":"skip","Package":"q"}`, pkg, `{"Action":"pass","Package":"p","Test":"TestA"}`, `{"Action":"pass","Package":"p"}`},
			[]string{"ok\tp"}, 0},
		{"build failure", []string{`{"ImportPath":"p [p.test]","Action":"build-output","Output":"./a.go:1: undefined: x\n"}`, `{"ImportPath":"p [p.test]","Action":"build-fail"}`, `{"Action":"fail","Package":"p"}`},
			[]string{"undefined: x", "FAIL\tp"}, 1},
		{"nothing at all", nil, []string{"no `go test -json` output"}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out strings.Builder
			code := summarize(strings.NewReader(strings.Join(tt.events, "\n")), &out)
			if code != tt.wantCode {
				t.Errorf("exit %d, want %d", code, tt.wantCode)
			}
			for _, w := range tt.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
			if strings.Contains(out.String(), "\tq") {
				t.Errorf("package without tests listed:\n%s", out.String())
			}
		})
	}
}
