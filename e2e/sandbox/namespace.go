package sandbox

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
)

var notDNS = regexp.MustCompile(`[^a-z0-9-]+`)

// NewNamespace creates a namespace named after the test and deletes it when
// the test ends, so tests sharing one sandbox never see each other's objects.
func (s *Sandbox) NewNamespace(t testing.TB) string {
	t.Helper()
	prefix := notDNS.ReplaceAllString(strings.ToLower(t.Name()), "-")
	prefix = strings.Trim(prefix, "-")
	if len(prefix) > 40 {
		prefix = strings.Trim(prefix[:40], "-")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ns, err := s.Kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-", Labels: map[string]string{"rebind.test/sandbox": "e2e"}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("sandbox: create namespace: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// Nothing later depends on the namespace being gone.
		if err := s.DeleteNamespace(ctx, ns.Name); err != nil {
			t.Errorf("sandbox: %v", err)
		}
	})
	return ns.Name
}

// DeleteNamespace deletes a test namespace, its StatefulSets first: left to
// the namespace controller, they keep failing to recreate the pods it
// deletes, and those retries use up the StatefulSet controller's API rate
// limit, slowing every other StatefulSet in the sandbox for seconds. The
// namespace controller finishes the deletion in the background.
func (s *Sandbox) DeleteNamespace(ctx context.Context, name string) error {
	err := s.Kube.AppsV1().StatefulSets(name).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete StatefulSets of namespace %s: %w", name, err)
	}
	err = s.Kube.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete namespace %s: %w", name, err)
	}
	return nil
}

// ServiceAccountKubeconfig writes a kubeconfig that authenticates as the
// ServiceAccount ns/sa (created if missing) with a TokenRequest token, so a
// command under test holds only the RBAC the test grants that account.
func (s *Sandbox) ServiceAccountKubeconfig(ctx context.Context, ns, sa string) (string, error) {
	_, err := s.Kube.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Name: sa},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("create ServiceAccount %s/%s: %w", ns, sa, err)
	}
	tr, err := s.Kube.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](24 * 3600)},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("TokenRequest for %s/%s: %w", ns, sa, err)
	}
	dir := filepath.Join(s.Dir, "kubeconfigs")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	path := filepath.Join(dir, fmt.Sprintf("sa-%s-%s.kubeconfig", ns, sa))
	if err := writeKubeconfig(path, s.Server, ns, s.pki.caPEM, &clientcmdapi.AuthInfo{Token: tr.Status.Token}); err != nil {
		return "", err
	}
	return path, nil
}
