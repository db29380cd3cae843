// Package events records Kubernetes Events through client-go's event
// broadcaster (k8s.io/client-go/tools/record), as controllers do, for a
// command-line process: Close waits until what was recorded has been
// written, so the last Event of a run is not lost when the process exits.
package events

import (
	"os"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
)

// maxMessage keeps a message within what the API server accepts (1 KiB
// for events.k8s.io; core/v1 takes more, but readers truncate).
const maxMessage = 1024

// Recorder records Events on objects. The zero value and nil discard them.
type Recorder struct {
	b   record.EventBroadcaster
	rec record.EventRecorder

	mu     sync.Mutex
	sent   int
	done   int
	notify chan struct{}
}

// New records Events as component (the Event's source and reporting
// controller) on this host.
func New(kube kubernetes.Interface, component string) *Recorder {
	r := &Recorder{notify: make(chan struct{}, 1)}
	r.b = record.NewBroadcaster()
	r.b.StartRecordingToSink(&countingSink{EventSink: &typedcorev1.EventSinkImpl{Interface: kube.CoreV1().Events("")}, r: r})
	host, _ := os.Hostname()
	r.rec = r.b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: component, Host: host})
	return r
}

// Event records one Event on obj (a typed object of client-go's scheme).
// It does not wait for the API server.
func (r *Recorder) Event(obj runtime.Object, eventType, reason, message string) {
	if r == nil || r.rec == nil || obj == nil {
		return
	}
	if len(message) > maxMessage {
		message = message[:maxMessage-3] + "..."
	}
	r.mu.Lock()
	r.sent++
	r.mu.Unlock()
	r.rec.Event(obj, eventType, reason, message)
}

// Close waits up to timeout for every recorded Event to be written (or to
// have failed its first attempt), then stops the broadcaster.
func (r *Recorder) Close(timeout time.Duration) {
	if r == nil || r.b == nil {
		return
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		pending := r.sent > r.done
		r.mu.Unlock()
		if !pending {
			break
		}
		select {
		case <-r.notify:
		case <-deadline.C:
			r.b.Shutdown()
			return
		}
	}
	r.b.Shutdown()
}

func (r *Recorder) written() {
	r.mu.Lock()
	r.done++
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

// countingSink counts the broadcaster's writes, so that Close knows when
// nothing is left to write. A failed first attempt counts too: Close does
// not wait out the broadcaster's retries.
type countingSink struct {
	record.EventSink
	r *Recorder
}

func (s *countingSink) Create(e *corev1.Event) (*corev1.Event, error) {
	defer s.r.written()
	return s.EventSink.Create(e)
}

func (s *countingSink) Update(e *corev1.Event) (*corev1.Event, error) {
	defer s.r.written()
	return s.EventSink.Update(e)
}

func (s *countingSink) Patch(e *corev1.Event, data []byte) (*corev1.Event, error) {
	defer s.r.written()
	return s.EventSink.Patch(e, data)
}
