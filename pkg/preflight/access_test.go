package preflight

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	authv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// A fleet asks the same questions for every target: each distinct one
// reaches the API server once, denials are reported to every caller, and a
// question that could not be asked is asked again.
func TestAccessReviewerAsksEachQuestionOnce(t *testing.T) {
	k := fake.NewSimpleClientset()
	var asked atomic.Int32
	var failNext atomic.Bool
	k.PrependReactor("create", "selfsubjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		asked.Add(1)
		if failNext.CompareAndSwap(true, false) {
			return true, nil, errors.New("connection refused")
		}
		r := a.(k8stesting.CreateAction).GetObject().(*authv1.SelfSubjectAccessReview)
		r.Status.Allowed = r.Spec.ResourceAttributes.Verb != "delete"
		return true, r, nil
	})
	get := Permission{Verb: "get", Resource: "persistentvolumes"}
	del := Permission{Verb: "delete", Resource: "persistentvolumes"}
	list := Permission{Verb: "list", Group: "storage.k8s.io", Resource: "storageclasses"}
	a := &AccessReviewer{Kube: k}

	var wg sync.WaitGroup
	reports := make([]Report, 10)
	errs := make([]error, 10)
	for i := range reports {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = a.Check(context.Background(), []Permission{get, del, list, get}, &reports[i])
		}()
	}
	wg.Wait()
	for i, r := range reports {
		if errs[i] != nil || len(r.Problems) != 1 || r.Problems[0].Message != "not allowed to "+del.String() {
			t.Errorf("caller %d: %v, problems %+v", i, errs[i], r.Problems)
		}
	}
	if n := asked.Load(); n != 3 {
		t.Errorf("%d reviews sent for 3 distinct questions", n)
	}

	other := Permission{Verb: "watch", Resource: "persistentvolumes"}
	failNext.Store(true)
	var r Report
	if err := a.Check(context.Background(), []Permission{other}, &r); err == nil {
		t.Fatal("a failed review was taken for an answer")
	}
	if err := a.Check(context.Background(), []Permission{other, get}, &r); err != nil || len(r.Problems) != 0 {
		t.Errorf("asked again: %v, %+v", err, r.Problems)
	}
	if n := asked.Load(); n != 5 {
		t.Errorf("%d reviews sent, want 5 (the failed question asked twice, the rest once)", n)
	}
}

// CheckAccess shares the answers of a reviewer in its context, for the
// same client only.
func TestCheckAccessSharesAReviewerInContext(t *testing.T) {
	count := func(k *fake.Clientset) *atomic.Int32 {
		var n atomic.Int32
		k.PrependReactor("create", "selfsubjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
			n.Add(1)
			r := a.(k8stesting.CreateAction).GetObject().(*authv1.SelfSubjectAccessReview)
			r.Status.Allowed = true
			return true, r, nil
		})
		return &n
	}
	k, other := fake.NewSimpleClientset(), fake.NewSimpleClientset()
	nk, nother := count(k), count(other)
	ctx := WithAccessReviewer(context.Background(), &AccessReviewer{Kube: k})
	perms := []Permission{{Verb: "get", Resource: "pods", Namespace: "a"}, {Verb: "list", Resource: "pods", Namespace: "a"}}
	for range 3 {
		var r Report
		if err := CheckAccess(ctx, k, perms, &r); err != nil {
			t.Fatal(err)
		}
		if err := CheckAccess(ctx, other, perms, &r); err != nil {
			t.Fatal(err)
		}
	}
	if nk.Load() != 2 || nother.Load() != 6 {
		t.Errorf("reviews: %d through the shared reviewer (want 2), %d through another client (want 6)", nk.Load(), nother.Load())
	}
}
