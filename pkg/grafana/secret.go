package grafana

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Keys the Grafana chart writes into its admin Secret (named like the release's fullname).
const (
	SecretUserKey     = "admin-user"
	SecretPasswordKey = "admin-password"
)

// CredentialsFromSecret reads the chart's admin Secret with the default keys.
func CredentialsFromSecret(ctx context.Context, kube kubernetes.Interface, namespace, name string) (Credentials, error) {
	return CredentialsFromSecretKeys(ctx, kube, namespace, name, SecretUserKey, SecretPasswordKey)
}

// CredentialsFromSecretKeys reads admin credentials from a Secret whose keys
// were renamed (chart values admin.userKey / admin.passwordKey).
func CredentialsFromSecretKeys(ctx context.Context, kube kubernetes.Interface, namespace, name, userKey, passwordKey string) (Credentials, error) {
	if kube == nil {
		return Credentials{}, fmt.Errorf("reading Secret %s/%s: no Kubernetes client available", namespace, name)
	}
	s, err := kube.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return Credentials{}, fmt.Errorf("grafana admin Secret %s/%s not found: it is named after the release fullname (e.g. \"grafana\" or \"<release>-grafana\"); pass --grafana-secret", namespace, name)
	case apierrors.IsForbidden(err):
		return Credentials{}, fmt.Errorf("not allowed to read Secret %s/%s (needs get on secrets in %s), or pass --grafana-user/--grafana-password instead", namespace, name, namespace)
	case err != nil:
		return Credentials{}, fmt.Errorf("reading Secret %s/%s: %w", namespace, name, err)
	}
	pw, ok := s.Data[passwordKey]
	if !ok || len(pw) == 0 {
		return Credentials{}, fmt.Errorf("Secret %s/%s has no %q key; if the chart uses admin.existingSecret with other keys, pass them explicitly", namespace, name, passwordKey)
	}
	user := string(s.Data[userKey])
	if user == "" {
		// The chart always writes both keys; a hand-made Secret may not.
		user = "admin"
	}
	return Credentials{User: user, Password: string(pw), Source: fmt.Sprintf("Secret %s/%s", namespace, name)}, nil
}
