// Package preflight collects everything that would make a migration fail or
// lose data, before anything is changed, each with the object and the fix.
package preflight

import (
	"context"
	"fmt"
	"strings"

	authv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
func CheckAccess(ctx context.Context, k kubernetes.Interface, perms []Permission, r *Report) error {
	for _, p := range perms {
		review := &authv1.SelfSubjectAccessReview{Spec: authv1.SelfSubjectAccessReviewSpec{
			ResourceAttributes: &authv1.ResourceAttributes{Namespace: p.Namespace, Verb: p.Verb, Group: p.Group, Resource: p.Resource, Subresource: p.Subresource, Name: p.Name},
		}}
		got, err := k.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, review, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("asking the API server for access (SelfSubjectAccessReview): %w", err)
		}
		if !got.Status.Allowed {
			r.Add("RBAC", "not allowed to "+p.String(),
				"grant it to the user or ServiceAccount running rebind (see manifests/rbac-migrate.yaml)")
		}
	}
	return nil
}
