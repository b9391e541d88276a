package kube

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"

	"github.com/tcpconn/tcpconn/internal/kubetest"
)

// TestRBACManifestIsExactlyEnough applies deploy/rbac.yaml to a real API
// server, runs the resolver with the service account's own token, and
// checks that its informers sync and that the account can read nothing
// else (secrets, configmaps).
func TestRBACManifestIsExactlyEnough(t *testing.T) {
	srv := kubetest.Start(t)
	admin := srv.Client(t)
	applyManifest(t, admin, filepath.Join("..", "..", "deploy", "agent", "rbac.yaml"))

	tok, err := admin.CoreV1().ServiceAccounts("otelcol-tcpconn").CreateToken(context.Background(), "otelcol-tcpconn",
		&authv1.TokenRequest{Spec: authv1.TokenRequestSpec{}}, metav1.CreateOptions{})
	require.NoError(t, err)
	rc := &rest.Config{Host: srv.Host(), BearerToken: tok.Status.Token, TLSClientConfig: rest.TLSClientConfig{Insecure: true}}
	sa, err := kubernetes.NewForConfig(rc)
	require.NoError(t, err)

	h := &health{}
	cfg := DefaultConfig()
	r := New(sa, cfg, Options{HealthInterval: 100 * time.Millisecond, OnHealth: h.set})
	r.Start()
	defer r.Stop()
	require.Eventually(t, r.Synced, 20*time.Second, 20*time.Millisecond, "informers did not sync with the manifest's rights")
	require.Eventually(t, func() bool { err, n := h.get(); return n > 0 && err == nil }, 10*time.Second, 20*time.Millisecond)

	_, err = sa.CoreV1().Secrets("default").List(context.Background(), metav1.ListOptions{})
	assert.True(t, apierrors.IsForbidden(err), "secrets must be forbidden, got %v", err)
	_, err = sa.CoreV1().ConfigMaps("default").List(context.Background(), metav1.ListOptions{})
	assert.True(t, apierrors.IsForbidden(err), "configmaps must be forbidden, got %v", err)
	_, err = sa.CoreV1().Pods("default").Create(context.Background(), &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "x"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "x", Image: "x"}}}}, metav1.CreateOptions{})
	assert.True(t, apierrors.IsForbidden(err), "writes must be forbidden, got %v", err)
}

func applyManifest(t *testing.T, c kubernetes.Interface, path string) {
	t.Helper()
	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	dec := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(raw), 4096)
	ctx := context.Background()
	for {
		var doc map[string]any
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			return
		} else {
			require.NoError(t, err)
		}
		if len(doc) == 0 {
			continue
		}
		js, err := json.Marshal(doc)
		require.NoError(t, err)
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(js, nil, nil)
		require.NoError(t, err)
		switch o := obj.(type) {
		case *corev1.Namespace:
			_, err = c.CoreV1().Namespaces().Create(ctx, o, metav1.CreateOptions{})
		case *corev1.ServiceAccount:
			_, err = c.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.ClusterRole:
			_, err = c.RbacV1().ClusterRoles().Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.ClusterRoleBinding:
			_, err = c.RbacV1().ClusterRoleBindings().Create(ctx, o, metav1.CreateOptions{})
		default:
			t.Fatalf("unexpected kind %T in %s", obj, path)
		}
		require.NoError(t, err)
	}
}
