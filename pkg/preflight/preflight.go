// Package preflight collects everything that would make a migration fail or
// lose data, before anything is changed, each with the object and the fix.
package preflight

import (
	"context"
	"fmt"
	"strings"

	"k8s.io/client-go/kubernetes"
)

// Problem is one failed precondition.
type Problem struct {
	Object  string `json:"object"`
	Message string `json:"message"`
	Fix     string `json:"fix"`
}

// Error lists every problem found, not only the first: an operator fixing
// them one run at a time would lose a maintenance window.
type Error struct {
	Problems []Problem
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "preflight found %d problem(s); nothing was changed:", len(e.Problems))
	for _, p := range e.Problems {
		fmt.Fprintf(&b, "\n  - %s: %s\n    fix: %s", p.Object, p.Message, p.Fix)
	}
	return b.String()
}

// Report accumulates problems.
type Report struct{ Problems []Problem }

// Add records a problem.
func (r *Report) Add(object, message, fix string) {
	r.Problems = append(r.Problems, Problem{Object: object, Message: message, Fix: fix})
}

// Err returns nil when nothing was found.
func (r *Report) Err() error {
	if len(r.Problems) == 0 {
		return nil
	}
	return &Error{Problems: r.Problems}
}

// Permission is one API verb the plan needs.
type Permission struct {
	Verb        string
	Group       string
	Resource    string
	Subresource string
	Namespace   string // empty for cluster-scoped resources
	// Name restricts the permission to one object (RBAC resourceNames),
	// for an object whose name rebind knows in advance.
	Name string
}

func (p Permission) String() string {
	r := p.Resource
	if p.Group != "" {
		r += "." + p.Group
	}
	if p.Subresource != "" {
		r += "/" + p.Subresource
	}
	where := "cluster-wide"
	if p.Namespace != "" {
		where = "in namespace " + p.Namespace
	}
	if p.Name != "" {
		r += " " + p.Name
	}
	return fmt.Sprintf("%s %s %s", p.Verb, r, where)
}

// CheckAccess asks the API server, for every permission, whether the
// current user has it (SelfSubjectAccessReview), so a missing verb is found
// before the first change rather than half-way through a migration.
// Within a context carrying an AccessReviewer for the same client (a
// fleet of drills), answers are shared.
func CheckAccess(ctx context.Context, k kubernetes.Interface, perms []Permission, r *Report) error {
	if a, ok := ctx.Value(reviewerKey{}).(*AccessReviewer); ok && a.Kube == k {
		return a.Check(ctx, perms, r)
	}
	return (&AccessReviewer{Kube: k}).Check(ctx, perms, r)
}

type reviewerKey struct{}

// WithAccessReviewer makes CheckAccess share a's answers under ctx: for
// runs that ask the same questions side by side, not for a process that
// lives on (access granted or revoked later must be seen).
func WithAccessReviewer(ctx context.Context, a *AccessReviewer) context.Context {
	return context.WithValue(ctx, reviewerKey{}, a)
}
