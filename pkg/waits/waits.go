// Package waits tells the person running rebind what a long wait is
// waiting for, and for how long: live on a terminal, as plain lines in a
// log. Waits anywhere (a claim to bind, a snapshot to be ready, Grafana to
// answer) announce themselves through the context; a run without a
// Printer in its context announces nothing.
package waits

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"
)

type printerKey struct{}

// With makes the waits under ctx show on p.
func With(ctx context.Context, p *Printer) context.Context {
	return context.WithValue(ctx, printerKey{}, p)
}

// Begin announces a wait for what; the returned func ends it. Short waits
// show nothing: only one that lasts past the Printer's threshold does.
func Begin(ctx context.Context, what string) (end func()) {
	p, ok := ctx.Value(printerKey{}).(*Printer)
	if !ok || p == nil {
		return func() {}
	}
	return p.begin(what)
}

// Printer shows the waits in progress. Everything else written to the
// same terminal must go through it (it is an io.Writer), so that the live
// line is cleared before other output and drawn again after it.
type Printer struct {
	w   io.Writer
	tty bool
	// After is how long a wait stays silent; Every how often a plain line
	// repeats (the live line is redrawn on every tick).
	after, every time.Duration
	now          func() time.Time

	mu      sync.Mutex
	active  map[int]*wait
	next    int
	drawn   bool // a live line is on the terminal
	stop    chan struct{}
	stopped chan struct{}
}

type wait struct {
	what      string
	start     time.Time
	lastPrint time.Time
	printed   bool
}

// NewPrinter writes to w: a live line when tty, plain lines otherwise.
func NewPrinter(w io.Writer, tty bool) *Printer {
	return newPrinter(w, tty, 2*time.Second, 15*time.Second, time.Now, time.NewTicker(250*time.Millisecond).C)
}

func newPrinter(w io.Writer, tty bool, after, every time.Duration, now func() time.Time, ticks <-chan time.Time) *Printer {
	p := &Printer{w: w, tty: tty, after: after, every: every, now: now, active: map[int]*wait{},
		stop: make(chan struct{}), stopped: make(chan struct{})}
	go p.loop(ticks)
	return p
}

// Close stops the printer and clears its live line.
func (p *Printer) Close() {
	select {
	case <-p.stop:
		return
	default:
	}
	close(p.stop)
	<-p.stopped
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clear()
}

func (p *Printer) loop(ticks <-chan time.Time) {
	defer close(p.stopped)
	for {
		select {
		case <-p.stop:
			return
		case <-ticks:
			p.mu.Lock()
			p.render()
			p.mu.Unlock()
		}
	}
}

func (p *Printer) begin(what string) func() {
	p.mu.Lock()
	id := p.next
	p.next++
	p.active[id] = &wait{what: what, start: p.now()}
	p.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			w := p.active[id]
			delete(p.active, id)
			if w.printed && !p.tty {
				fmt.Fprintf(p.w, "  waited %s for %s\n", round(p.now().Sub(w.start)), w.what)
			}
			if p.tty {
				p.clear()
				p.draw()
			}
		})
	}
}

// render runs on every tick, under mu.
func (p *Printer) render() {
	if p.tty {
		p.clear()
		p.draw()
		return
	}
	now := p.now()
	for _, w := range p.sorted() {
		due := !w.printed && now.Sub(w.start) >= p.after || w.printed && now.Sub(w.lastPrint) >= p.every
		if due {
			fmt.Fprintf(p.w, "  waiting for %s (%s so far)\n", w.what, round(now.Sub(w.start)))
			w.printed, w.lastPrint = true, now
		}
	}
}

// draw puts the live line up: the waits past the threshold, longest first.
func (p *Printer) draw() {
	now := p.now()
	var parts []string
	for _, w := range p.sorted() {
		if d := now.Sub(w.start); d >= p.after {
			parts = append(parts, fmt.Sprintf("%s (%s)", w.what, round(d)))
		}
	}
	if len(parts) == 0 {
		return
	}
	fmt.Fprintf(p.w, "  waiting for %s", strings.Join(parts, ", "))
	p.drawn = true
}

func (p *Printer) clear() {
	if p.drawn {
		io.WriteString(p.w, "\r\033[K")
		p.drawn = false
	}
}

func (p *Printer) sorted() []*wait {
	ws := make([]*wait, 0, len(p.active))
	for _, w := range p.active {
		ws = append(ws, w)
	}
	sort.Slice(ws, func(i, j int) bool { return ws[i].start.Before(ws[j].start) })
	return ws
}

// Write writes other output, keeping the live line below it.
func (p *Printer) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clear()
	n, err := p.w.Write(b)
	if p.tty && len(b) > 0 && b[len(b)-1] == '\n' {
		p.draw()
	}
	return n, err
}

func round(d time.Duration) time.Duration {
	if d < 10*time.Second {
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Second)
}
