package preflight

import (
	"context"
	"errors"
	"fmt"
	"sync"

	authv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// AccessReviewer asks the API server each distinct access question once
// (SelfSubjectAccessReview) and remembers the answer for the process: a
// fleet of drills asks the same cluster-wide questions for every target,
// and one target's permissions repeat across its checks. Questions of one
// Check go out side by side. Safe for concurrent use.
type AccessReviewer struct {
	Kube kubernetes.Interface

	mu      sync.Mutex
	answers map[Permission]*accessAnswer
}

type accessAnswer struct {
	done    chan struct{}
	allowed bool
	err     error
}

// maxReviewsInFlight bounds the questions one Check sends at once.
const maxReviewsInFlight = 8

// Check adds a problem to r for every permission the current user lacks.
// An error means the API server could not be asked.
func (a *AccessReviewer) Check(ctx context.Context, perms []Permission, r *Report) error {
	answers := make([]*accessAnswer, len(perms))
	sem := make(chan struct{}, maxReviewsInFlight)
	for i, p := range perms {
		answers[i] = a.ask(ctx, p, sem)
	}
	for i, ans := range answers {
		select {
		case <-ans.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		if ans.err != nil && ctx.Err() == nil && (errors.Is(ans.err, context.Canceled) || errors.Is(ans.err, context.DeadlineExceeded)) {
			// Asked under another caller's context, which ended: ask
			// again under ours.
			ans = a.ask(ctx, perms[i], sem)
			<-ans.done
		}
		if ans.err != nil {
			return ans.err
		}
		if !ans.allowed {
			r.Add("RBAC", "not allowed to "+perms[i].String(),
				"grant it to the user or ServiceAccount running rebind (see manifests/rbac-migrate.yaml)")
		}
	}
	return nil
}

// ask returns the answer to p, sending the question unless it was asked
// before (or is being asked). A question that failed is asked again next
// time: an outage of the API server is not an answer.
func (a *AccessReviewer) ask(ctx context.Context, p Permission, sem chan struct{}) *accessAnswer {
	a.mu.Lock()
	if a.answers == nil {
		a.answers = map[Permission]*accessAnswer{}
	}
	if ans, ok := a.answers[p]; ok {
		a.mu.Unlock()
		return ans
	}
	ans := &accessAnswer{done: make(chan struct{})}
	a.answers[p] = ans
	a.mu.Unlock()
	go func() {
		defer close(ans.done)
		select {
		case sem <- struct{}{}:
			defer func() { <-sem }()
		case <-ctx.Done():
			ans.err = ctx.Err()
		}
		if ans.err == nil {
			ans.allowed, ans.err = review(ctx, a.Kube, p)
		}
		if ans.err != nil {
			a.mu.Lock()
			delete(a.answers, p)
			a.mu.Unlock()
		}
	}()
	return ans
}

func review(ctx context.Context, k kubernetes.Interface, p Permission) (bool, error) {
	rev := &authv1.SelfSubjectAccessReview{Spec: authv1.SelfSubjectAccessReviewSpec{
		ResourceAttributes: &authv1.ResourceAttributes{Namespace: p.Namespace, Verb: p.Verb, Group: p.Group, Resource: p.Resource, Subresource: p.Subresource, Name: p.Name},
	}}
	got, err := k.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, rev, metav1.CreateOptions{})
	if err != nil {
		return false, fmt.Errorf("asking the API server for access (SelfSubjectAccessReview): %w", err)
	}
	return got.Status.Allowed, nil
}
