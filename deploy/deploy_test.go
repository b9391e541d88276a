// Package deploy holds the Kubernetes manifests (kustomize) and their
// tests: they are applied with a server-side dry run to a real API server,
// the service account's rights are checked with kubectl auth can-i, the
// collector configurations they ship validate with the built collector,
// and the image `make image` builds holds that collector.
package deploy

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tcpconn/tcpconn/internal/kubetest"
	"github.com/tcpconn/tcpconn/internal/netnstest"
)

var kustomizations = []string{".", "agent", "gateway", "overlays/istio"}

func kubectl(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("kubectl")
	if err != nil {
		netnstest.Unavailable(t, "kubectl")
	}
	return bin
}

func run(t *testing.T, stdin []byte, name string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(name, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestManifestsServerSideDryRun renders every kustomization and applies it
// with a server-side dry run: the API server validates every object.
func TestManifestsServerSideDryRun(t *testing.T) {
	k := kubectl(t)
	api := kubetest.Start(t)
	kubeconfig, err := api.WriteKubeconfig(t.TempDir())
	require.NoError(t, err)
	// A dry run creates nothing, so the namespace the objects live in must exist.
	_, err = api.Client(t).CoreV1().Namespaces().Create(context.Background(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "otelcol-tcpconn"}}, metav1.CreateOptions{})
	require.NoError(t, err)

	for _, dir := range kustomizations {
		t.Run(dir, func(t *testing.T) {
			rendered, err := run(t, nil, k, "kustomize", dir)
			require.NoError(t, err, rendered)
			out, err := run(t, []byte(rendered), k, "--kubeconfig", kubeconfig, "apply", "--server-side", "--dry-run=server",
				"--field-manager=tcpconn-test", "-f", "-")
			require.NoError(t, err, out)
			assert.Contains(t, out, "serverside-applied (server dry run)")
		})
	}
}

// TestServiceAccountRights applies the agent's RBAC for real and asks the
// API server what its service account may do.
func TestServiceAccountRights(t *testing.T) {
	k := kubectl(t)
	api := kubetest.Start(t)
	kubeconfig, err := api.WriteKubeconfig(t.TempDir())
	require.NoError(t, err)
	out, err := run(t, nil, k, "--kubeconfig", kubeconfig, "apply", "--server-side", "-f", filepath.Join("agent", "rbac.yaml"))
	require.NoError(t, err, out)

	sa := "system:serviceaccount:otelcol-tcpconn:otelcol-tcpconn"
	for _, c := range []struct {
		verb, resource string
		allowed        bool
	}{
		{"list", "pods", true}, {"watch", "pods", true}, {"get", "nodes", true}, {"list", "services", true},
		{"watch", "endpointslices.discovery.k8s.io", true}, {"list", "replicasets.apps", true}, {"list", "jobs.batch", true},
		{"get", "secrets", false}, {"list", "configmaps", false}, {"create", "pods", false}, {"delete", "pods", false},
		{"list", "deployments.apps", false},
	} {
		out, _ := run(t, nil, k, "--kubeconfig", kubeconfig, "auth", "can-i", c.verb, c.resource, "--all-namespaces", "--as", sa)
		want := "no"
		if c.allowed {
			want = "yes"
		}
		assert.Equal(t, want, strings.TrimSpace(out), "%s %s", c.verb, c.resource)
	}
}

// TestShippedConfigsValidate: every collector configuration the manifests
// mount is accepted by the built collector.
func TestShippedConfigsValidate(t *testing.T) {
	bin := collector(t)
	for _, cfg := range []string{"agent/agent.yaml", "gateway/gateway.yaml", "overlays/istio/agent.yaml"} {
		// As the DaemonSet runs it (health checks from component status).
		cmd := exec.Command(bin, "validate", "--config", cfg, "--feature-gates=+extension.healthcheck.useComponentStatus")
		cmd.Env = append(os.Environ(), "K8S_NODE_NAME=node-a", "OTLP_ENDPOINT=gateway:4317", "GATEWAY_SERVICE=gateway-headless.ns",
			"REMOTE_WRITE_ENDPOINT=http://store:9090/api/v1/write", "LOGS_ENDPOINT=backend:4317", "LOGS_INSECURE=false", "POD_NAME=gateway-0")
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s: %s", cfg, out)
	}
}

// TestImage checks the tarball `make image` writes: the entry point, and
// the collector binary it carries is the one `make build` produced.
func TestImage(t *testing.T) {
	bin := collector(t)
	path := filepath.Join("..", "dist", "otelcol-tcpconn-image.tar")
	if _, err := os.Stat(path); err != nil {
		netnstest.Unavailable(t, "dist/otelcol-tcpconn-image.tar (run `make image`)")
	}
	files := untar(t, path)
	var manifest []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	require.NoError(t, json.Unmarshal(files["manifest.json"], &manifest))
	require.Len(t, manifest, 1)
	assert.Equal(t, []string{"otelcol-tcpconn:0.1.0"}, manifest[0].RepoTags)
	var cfg struct {
		Architecture, OS string
		Config           struct{ Entrypoint, Cmd []string }
	}
	require.NoError(t, json.Unmarshal(files[manifest[0].Config], &cfg))
	assert.Equal(t, []string{"/otelcol-tcpconn"}, cfg.Config.Entrypoint)
	assert.Equal(t, "linux", cfg.OS)

	require.Len(t, manifest[0].Layers, 1)
	gz, err := gzip.NewReader(bytes.NewReader(files[manifest[0].Layers[0]]))
	require.NoError(t, err)
	layer := readTar(t, gz)
	want, err := os.ReadFile(bin)
	require.NoError(t, err)
	assert.Equal(t, sha256.Sum256(want), sha256.Sum256(layer["otelcol-tcpconn"]), "the image carries the built collector")
	assert.Contains(t, string(layer["etc/otelcol-tcpconn/config.yaml"]), "tcpconn:")
}

func collector(t *testing.T) string {
	t.Helper()
	bin, err := filepath.Abs(filepath.Join("..", "bin", "otelcol-tcpconn"))
	require.NoError(t, err)
	if _, err := os.Stat(bin); err != nil {
		netnstest.Unavailable(t, "bin/otelcol-tcpconn (run `make build`)")
	}
	return bin
}

func untar(t *testing.T, path string) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	return readTar(t, f)
}

func readTar(t *testing.T, r io.Reader) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		require.NoError(t, err)
		b, err := io.ReadAll(tr)
		require.NoError(t, err)
		out[h.Name] = b
	}
}
