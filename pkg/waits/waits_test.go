package waits

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

// harness drives a printer with a fake clock and ticks it controls.
type harness struct {
	t     *testing.T
	clock *fakeClock
	ticks chan time.Time
	out   *bytes.Buffer
	p     *Printer
}

func newHarness(t *testing.T, tty bool) *harness {
	h := &harness{t: t, clock: &fakeClock{t: time.Unix(0, 0)}, ticks: make(chan time.Time), out: &bytes.Buffer{}}
	h.p = newPrinter(h.out, tty, 2*time.Second, 10*time.Second, h.clock.now, h.ticks)
	t.Cleanup(h.p.Close)
	return h
}

// advance moves the clock and lets the printer render once: the second
// send returns only once the first tick's render is done.
func (h *harness) advance(d time.Duration) {
	h.p.mu.Lock()
	h.clock.t = h.clock.t.Add(d)
	h.p.mu.Unlock()
	h.ticks <- h.clock.t
	h.ticks <- h.clock.t
}

func (h *harness) output() string {
	h.p.mu.Lock()
	defer h.p.mu.Unlock()
	return h.out.String()
}

func TestWaitsAsPlainLines(t *testing.T) {
	h := newHarness(t, false)
	ctx := With(context.Background(), h.p)

	short := Begin(ctx, "pod grafana-0 to stop")
	h.advance(time.Second)
	short()
	if got := h.output(); got != "" {
		t.Fatalf("a 1 s wait printed %q", got)
	}

	end := Begin(ctx, "claim storage-grafana-0 to be Bound")
	h.advance(2 * time.Second)
	h.advance(5 * time.Second) // 7 s: not yet repeated
	h.advance(5 * time.Second) // 12 s: 10 s after the first line
	end()
	want := "  waiting for claim storage-grafana-0 to be Bound (2s so far)\n" +
		"  waiting for claim storage-grafana-0 to be Bound (12s so far)\n" +
		"  waited 12s for claim storage-grafana-0 to be Bound\n"
	if got := h.output(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func TestWaitsOnATerminal(t *testing.T) {
	h := newHarness(t, true)
	ctx := With(context.Background(), h.p)
	a := Begin(ctx, "snapshot s0")
	h.advance(time.Second)
	b := Begin(ctx, "snapshot s1")
	h.advance(2 * time.Second) // s0 at 3 s shows, s1 at 2 s too
	if got := h.output(); !strings.HasSuffix(got, "  waiting for snapshot s0 (3s), snapshot s1 (2s)") {
		t.Fatalf("live line %q", got)
	}
	// Other output clears the live line, goes above it, and the line is
	// drawn again below.
	if _, err := h.p.Write([]byte("✓ snapshot/0 1.2s\n")); err != nil {
		t.Fatal(err)
	}
	if got := h.output(); !strings.HasSuffix(got, "\r\033[K✓ snapshot/0 1.2s\n  waiting for snapshot s0 (3s), snapshot s1 (2s)") {
		t.Errorf("after a progress line: %q", got)
	}
	a()
	b()
	if got := h.output(); !strings.HasSuffix(got, "\r\033[K") {
		t.Errorf("live line not cleared when the waits ended: %q", got)
	}
}

func TestNoPrinterNoOutput(t *testing.T) {
	end := Begin(context.Background(), "anything")
	end()
	end() // twice is harmless
}
