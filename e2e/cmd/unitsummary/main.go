// Command unitsummary reads `go test -json` and prints one line per
// package, as `go test` does, except that a package whose tests were all
// skipped says "skip" instead of "ok": under `make unit` (-short) the e2e
// suites start no sandbox, and an "ok" would claim they passed. The
// output of failed tests is printed in full; the exit code is 1 when any
// package failed.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
)

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Action     string
	Package    string
	Test       string
	Output     string
	Elapsed    float64
	ImportPath string
}

var logLine = regexp.MustCompile(`^\s+\S+\.go:\d+: (.*)$`)

type pkgState struct {
	passed, skipped, failed int
	skipReason              string
	output                  map[string][]string // by test ("" for the package)
	failedTests             []string
}

func main() {
	os.Exit(summarize(os.Stdin, os.Stdout))
}

func summarize(in io.Reader, out io.Writer) int {
	pkgs := map[string]*pkgState{}
	get := func(p string) *pkgState {
		if pkgs[p] == nil {
			pkgs[p] = &pkgState{output: map[string][]string{}}
		}
		return pkgs[p]
	}
	code, events := 0, 0
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			// Not JSON: go itself failed (a build error before any test).
			fmt.Fprintln(out, sc.Text())
			code = 1
			continue
		}
		events++
		switch e.Action {
		case "build-output":
			fmt.Fprint(out, e.Output)
			continue
		case "build-fail":
			code = 1
			continue
		}
		if e.Package == "" {
			continue
		}
		p := get(e.Package)
		switch {
		case e.Action == "output":
			p.output[e.Test] = append(p.output[e.Test], e.Output)
			// A test's first logged line (file.go:NN: message) is its skip
			// reason when it is skipped.
			if m := logLine.FindStringSubmatch(strings.TrimRight(e.Output, "\n")); m != nil && e.Test != "" && p.skipReason == "" {
				p.skipReason = m[1]
			}
		case e.Test != "" && strings.Contains(e.Test, "/"):
			// Subtests are counted through their parent.
		case e.Action == "pass" && e.Test != "":
			p.passed++
		case e.Action == "skip" && e.Test != "":
			p.skipped++
		case e.Action == "fail" && e.Test != "":
			p.failed++
			p.failedTests = append(p.failedTests, e.Test)
		case e.Action == "skip":
			// No test files.
			delete(pkgs, e.Package)
		case e.Action == "pass" || e.Action == "fail":
			fmt.Fprintln(out, p.line(e, &code))
		}
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintln(out, "reading go test output:", err)
		return 1
	}
	if events == 0 {
		fmt.Fprintln(out, "no `go test -json` output")
		return 1
	}
	return code
}

func (p *pkgState) line(e event, code *int) string {
	switch {
	case e.Action == "fail":
		*code = 1
		var b strings.Builder
		for _, t := range p.failedTests {
			b.WriteString(strings.Join(p.output[t], ""))
		}
		if len(p.failedTests) == 0 {
			b.WriteString(strings.Join(p.output[""], ""))
		}
		fmt.Fprintf(&b, "FAIL\t%s\t%.3fs", e.Package, e.Elapsed)
		return b.String()
	case p.passed == 0 && p.skipped > 0:
		return fmt.Sprintf("skip\t%s\tall %d tests skipped: %s", e.Package, p.skipped, p.skipReason)
	case p.passed == 0:
		return fmt.Sprintf("ok\t%s\t%.3fs [no tests to run]", e.Package, e.Elapsed)
	case p.skipped > 0:
		return fmt.Sprintf("ok\t%s\t%.3fs (%d passed, %d skipped)", e.Package, e.Elapsed, p.passed, p.skipped)
	}
	return fmt.Sprintf("ok\t%s\t%.3fs (%d passed)", e.Package, e.Elapsed, p.passed)
}
