package deploy

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// TestGOMEMLIMITFollowsMemoryLimit: every collector container sets
// GOMEMLIMIT to 70-80 % of its memory limit. Below the memory_limiter's
// hard limit (limit_percentage 80 of the same cgroup limit), the garbage
// collector works harder before the limiter starts refusing data; without
// it the heap may grow to twice the live data and the container be killed
// first. A limit changed without GOMEMLIMIT fails here.
func TestGOMEMLIMITFollowsMemoryLimit(t *testing.T) {
	checked := 0
	for _, path := range []string{"agent/daemonset.yaml", "gateway/deployment.yaml"} {
		raw, err := os.ReadFile(path)
		require.NoError(t, err)
		for _, doc := range bytes.Split(raw, []byte("\n---")) {
			var obj struct {
				Kind string `json:"kind"`
				Spec struct {
					Template corev1.PodTemplateSpec `json:"template"`
				} `json:"spec"`
			}
			require.NoError(t, yaml.Unmarshal(doc, &obj), path)
			if obj.Kind != "DaemonSet" && obj.Kind != "Deployment" {
				continue
			}
			for _, c := range obj.Spec.Template.Spec.Containers {
				limit := c.Resources.Limits.Memory()
				require.False(t, limit.IsZero(), "%s: container %s has no memory limit", path, c.Name)
				var gomemlimit string
				for _, e := range c.Env {
					if e.Name == "GOMEMLIMIT" {
						gomemlimit = e.Value
					}
				}
				require.NotEmpty(t, gomemlimit, "%s: container %s sets no GOMEMLIMIT", path, c.Name)
				n, err := goMemLimitBytes(gomemlimit)
				require.NoError(t, err, "%s: GOMEMLIMIT %q", path, gomemlimit)
				ratio := float64(n) / float64(limit.Value())
				assert.True(t, ratio >= 0.70 && ratio <= 0.80, "%s: container %s: GOMEMLIMIT %s is %.0f %% of its memory limit %s, want 70-80 %%",
					path, c.Name, gomemlimit, 100*ratio, limit)
				checked++
			}
		}
	}
	assert.Equal(t, 2, checked, "the agent's and the gateway's containers")
}

// goMemLimitBytes parses a GOMEMLIMIT value as the Go runtime does: a
// number of bytes with an optional B, KiB, MiB, GiB or TiB suffix.
func goMemLimitBytes(v string) (int64, error) {
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		n      int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}} {
		if s, ok := strings.CutSuffix(v, u.suffix); ok {
			v, mult = s, u.n
			break
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	return n * mult, err
}
