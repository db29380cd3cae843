package velero

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Velero's restore item action for storage classes finds its configuration
// by these labels, not by name.
const (
	LabelPluginConfig       = "velero.io/plugin-config"
	LabelChangeStorageClass = "velero.io/change-storage-class"
	ChangeStorageClassKind  = "RestoreItemAction"
	// MappingConfigMap is the name used when none with the labels exists yet.
	MappingConfigMap = "change-storage-class-config"
)

// ClassMapping is the state of one key of the mapping before rebind set
// it, so that it can be put back: the ConfigMap applies to every restore
// in the cluster, not only rebind's.
type ClassMapping struct {
	ConfigMap string `json:"configMap"`
	From      string `json:"from"`
	Prior     string `json:"prior,omitempty"`
	HadPrior  bool   `json:"hadPrior,omitempty"`
	Created   bool   `json:"created,omitempty"` // rebind created the ConfigMap
}

// findMapping returns the ConfigMap carrying the change-storage-class labels.
func (c *Client) findMapping(ctx context.Context) (*corev1.ConfigMap, error) {
	list, err := c.Kube.CoreV1().ConfigMaps(c.Namespace).List(ctx, metav1.ListOptions{
		LabelSelector: LabelChangeStorageClass + "=" + ChangeStorageClassKind})
	if err != nil {
		return nil, fmt.Errorf("looking for Velero's storage-class mapping in %s: %w", c.Namespace, err)
	}
	for i := range list.Items {
		if _, ok := list.Items[i].Labels[LabelPluginConfig]; ok {
			return &list.Items[i], nil
		}
	}
	return nil, nil
}

// MappedClass returns what a restore maps class from to, or "" when unmapped.
func (c *Client) MappedClass(ctx context.Context, from string) (string, error) {
	cm, err := c.findMapping(ctx)
	if err != nil || cm == nil {
		return "", err
	}
	return cm.Data[from], nil
}

// MapStorageClass makes restores map class from to class to. It returns
// what was there before; pass it to Unmap once the restore is done.
func (c *Client) MapStorageClass(ctx context.Context, from, to string) (ClassMapping, error) {
	cm, err := c.findMapping(ctx)
	if err != nil {
		return ClassMapping{}, err
	}
	if cm == nil {
		cm = &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: MappingConfigMap, Namespace: c.Namespace, Labels: map[string]string{
				LabelPluginConfig: "", LabelChangeStorageClass: ChangeStorageClassKind}},
			Data: map[string]string{from: to},
		}
		if _, err := c.Kube.CoreV1().ConfigMaps(c.Namespace).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			return ClassMapping{}, fmt.Errorf("creating Velero storage-class mapping %s/%s: %w", c.Namespace, cm.Name, err)
		}
		return ClassMapping{ConfigMap: cm.Name, From: from, Created: true}, nil
	}
	prior, had := cm.Data[from]
	m := ClassMapping{ConfigMap: cm.Name, From: from, Prior: prior, HadPrior: had}
	if had && prior == to {
		return m, nil
	}
	if cm.Data == nil {
		cm.Data = map[string]string{}
	}
	cm.Data[from] = to
	if _, err := c.Kube.CoreV1().ConfigMaps(c.Namespace).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		return ClassMapping{}, fmt.Errorf("updating Velero storage-class mapping %s/%s: %w", c.Namespace, cm.Name, err)
	}
	return m, nil
}

// Unmap puts the mapping key back as MapStorageClass found it.
func (c *Client) Unmap(ctx context.Context, m ClassMapping) error {
	if m.ConfigMap == "" {
		return nil
	}
	cms := c.Kube.CoreV1().ConfigMaps(c.Namespace)
	cm, err := cms.Get(ctx, m.ConfigMap, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if m.Created && len(cm.Data) <= 1 {
		return cms.Delete(ctx, cm.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &cm.UID}})
	}
	if m.HadPrior {
		if cm.Data[m.From] == m.Prior {
			return nil
		}
		cm.Data[m.From] = m.Prior
	} else {
		if _, ok := cm.Data[m.From]; !ok {
			return nil
		}
		delete(cm.Data, m.From)
	}
	_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
	return err
}
