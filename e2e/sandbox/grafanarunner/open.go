package grafanarunner

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rebind-dev/rebind/e2e/grafanastandin"
)

const (
	// storageVolume is the chart's volume (and claim template) name.
	storageVolume = "storage"
	// dataPath is where the chart mounts the storage volume in Grafana.
	dataPath = "/var/lib/grafana"

	envAdminUser     = "GF_SECURITY_ADMIN_USER"
	envAdminPassword = "GF_SECURITY_ADMIN_PASSWORD"
)

// open resolves pod -> claim -> bound PV -> directory and credentials, and
// opens a stand-in there. Everything is read fresh from the API server: the
// binding is exactly what the cluster says at the moment the pod became Ready.
func (r *Runner) open(ctx context.Context, pod *corev1.Pod) (*backend, error) {
	claimName, subPath, err := storageClaim(pod)
	if err != nil {
		return nil, err
	}
	claim, err := r.kube.CoreV1().PersistentVolumeClaims(pod.Namespace).Get(ctx, claimName, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("claim %s/%s: %w", pod.Namespace, claimName, err)
	}
	if claim.Spec.VolumeName == "" || claim.Status.Phase != corev1.ClaimBound {
		return nil, fmt.Errorf("claim %s/%s is not bound", pod.Namespace, claimName)
	}
	pv, err := r.kube.CoreV1().PersistentVolumes().Get(ctx, claim.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("volume %s: %w", claim.Spec.VolumeName, err)
	}
	// The claim names the PV; the PV must name the claim back, or the binding
	// is half-done and serving it could show another claim's data.
	if ref := pv.Spec.ClaimRef; ref == nil || ref.Namespace != claim.Namespace || ref.Name != claim.Name || (ref.UID != "" && ref.UID != claim.UID) {
		return nil, fmt.Errorf("volume %s is not bound to claim %s/%s", pv.Name, claim.Namespace, claim.Name)
	}
	dir, ok := r.volumeDir(pv)
	if !ok {
		return nil, fmt.Errorf("volume %s has no directory in the sandbox storage", pv.Name)
	}
	if subPath != "" {
		// Validated by the API server, but the stand-in writes there: stay inside.
		sub := filepath.Join(dir, subPath)
		if rel, err := filepath.Rel(dir, sub); err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
			return nil, fmt.Errorf("subPath %q leaves the volume", subPath)
		}
		dir = sub
	}

	c := grafanaContainer(pod)
	var opts grafanastandin.Options
	if c != nil {
		// A real pod runs the Grafana of its image: the tag picks the
		// modelled version and the release /api/health reports.
		var known bool
		if opts.Version, opts.BuildVersion, known = imageVersion(c.Image); !known {
			r.log.Warn("image tag names no Grafana release; serving the default version",
				zap.String("pod", pod.Namespace+"/"+pod.Name), zap.String("image", c.Image), zap.String("version", string(opts.Version)))
		}
		if opts.AdminUser, err = r.envValue(ctx, pod.Namespace, c, envAdminUser); err != nil {
			return nil, err
		}
		if opts.AdminPassword, err = r.envValue(ctx, pod.Namespace, c, envAdminPassword); err != nil {
			return nil, err
		}
	}
	if opts.Version == "" {
		opts.Version = grafanastandin.DefaultVersion
	}
	b := &backend{uid: pod.UID, pv: pv.Name, dir: dir, version: opts.Version, opts: opts}
	if pod.Status.PodIP != "" {
		b.podAddr = net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(int(grafanaPort(c))))
	}
	return b, nil
}

// grafanaPort is the port Grafana listens on in the pod: the container's
// port named grafana (the chart's), else its first port, else Grafana's
// default 3000.
func grafanaPort(c *corev1.Container) int32 {
	if c == nil {
		return 3000
	}
	for _, p := range c.Ports {
		if p.Name == "grafana" {
			return p.ContainerPort
		}
	}
	if len(c.Ports) > 0 {
		return c.Ports[0].ContainerPort
	}
	return 3000
}

// imageVersion maps a Grafana image reference to the modelled version and
// the release it names: grafana/grafana:11.4.1 -> 11.6 reporting "11.4.1";
// 9.x -> 9.5, 10.x -> 10.4, 11.x -> 11.6, 12.x -> 12.4, 13.x and later
// -> 13.0 (see grafanastandin.ParseVersion). A reference without a tag (or
// pinned by digest only) gets the default version; "latest" the newest. known is
// false when the tag names no release; the default version is returned then.
func imageVersion(image string) (v grafanastandin.Version, build string, known bool) {
	ref, _, _ := strings.Cut(image, "@") // drop a digest
	tag := ""
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		tag = ref[i+1:]
	}
	v, err := grafanastandin.ParseVersion(tag)
	if err != nil {
		return grafanastandin.DefaultVersion, "", false
	}
	// "11.4.1-ubuntu" reports 11.4.1, like the binary inside.
	build = strings.TrimPrefix(tag, "v")
	if end := strings.IndexFunc(build, func(r rune) bool { return (r < '0' || r > '9') && r != '.' }); end >= 0 {
		build = build[:end]
	}
	return v, strings.Trim(build, "."), true
}

// storageClaim finds the claim behind the pod's storage volume and the subPath
// Grafana's data directory is mounted from.
func storageClaim(pod *corev1.Pod) (claim, subPath string, err error) {
	for _, v := range pod.Spec.Volumes {
		if v.Name == storageVolume && v.PersistentVolumeClaim != nil {
			claim = v.PersistentVolumeClaim.ClaimName
		}
	}
	if claim == "" {
		return "", "", fmt.Errorf("pod %s/%s has no %q claim volume", pod.Namespace, pod.Name, storageVolume)
	}
	if c := grafanaContainer(pod); c != nil {
		for _, m := range c.VolumeMounts {
			if m.Name == storageVolume && m.MountPath == dataPath {
				subPath = m.SubPath
			}
		}
	}
	return claim, subPath, nil
}

// grafanaContainer is the container named grafana (the chart's name), else the
// first one that sets the admin user.
func grafanaContainer(pod *corev1.Pod) *corev1.Container {
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == "grafana" {
			return &pod.Spec.Containers[i]
		}
	}
	for i := range pod.Spec.Containers {
		for _, e := range pod.Spec.Containers[i].Env {
			if e.Name == envAdminUser {
				return &pod.Spec.Containers[i]
			}
		}
	}
	return nil
}

// envValue resolves one variable the way the kubelet would: explicit env
// entries win over envFrom, the last entry of a name wins, and optional
// references to missing objects resolve to "".
func (r *Runner) envValue(ctx context.Context, ns string, c *corev1.Container, name string) (string, error) {
	for i := len(c.Env) - 1; i >= 0; i-- {
		e := c.Env[i]
		if e.Name != name {
			continue
		}
		if e.ValueFrom == nil {
			return e.Value, nil
		}
		switch {
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			return r.secretKey(ctx, ns, ref.Name, ref.Key, ref.Optional)
		case e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			cm, err := r.kube.CoreV1().ConfigMaps(ns).Get(ctx, ref.Name, metav1.GetOptions{})
			if err != nil {
				if ref.Optional != nil && *ref.Optional {
					return "", nil
				}
				return "", fmt.Errorf("%s: configmap %s/%s: %w", name, ns, ref.Name, err)
			}
			return cm.Data[ref.Key], nil
		default:
			return "", fmt.Errorf("%s: unsupported valueFrom", name)
		}
	}
	for i := len(c.EnvFrom) - 1; i >= 0; i-- {
		src := c.EnvFrom[i]
		if !strings.HasPrefix(name, src.Prefix) {
			continue
		}
		key := strings.TrimPrefix(name, src.Prefix)
		if src.SecretRef != nil {
			s, err := r.kube.CoreV1().Secrets(ns).Get(ctx, src.SecretRef.Name, metav1.GetOptions{})
			if err != nil {
				if src.SecretRef.Optional != nil && *src.SecretRef.Optional {
					continue
				}
				return "", fmt.Errorf("%s: secret %s/%s: %w", name, ns, src.SecretRef.Name, err)
			}
			if v, ok := s.Data[key]; ok {
				return string(v), nil
			}
		}
		if src.ConfigMapRef != nil {
			cm, err := r.kube.CoreV1().ConfigMaps(ns).Get(ctx, src.ConfigMapRef.Name, metav1.GetOptions{})
			if err != nil {
				if src.ConfigMapRef.Optional != nil && *src.ConfigMapRef.Optional {
					continue
				}
				return "", fmt.Errorf("%s: configmap %s/%s: %w", name, ns, src.ConfigMapRef.Name, err)
			}
			if v, ok := cm.Data[key]; ok {
				return v, nil
			}
		}
	}
	return "", nil
}

func (r *Runner) secretKey(ctx context.Context, ns, name, key string, optional *bool) (string, error) {
	s, err := r.kube.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		if optional != nil && *optional {
			return "", nil
		}
		return "", fmt.Errorf("secret %s/%s: %w", ns, name, err)
	}
	v, ok := s.Data[key]
	if !ok {
		if optional != nil && *optional {
			return "", nil
		}
		return "", fmt.Errorf("secret %s/%s has no key %q", ns, name, key)
	}
	return string(v), nil
}
