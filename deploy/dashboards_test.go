package deploy

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"
)

// histograms are built by the receiver outside mdatagen (which has no
// histogram builder): otel profile only.
var histograms = []string{"tcp.connection.duration", "tcp.rtt"}

// emitted maps each Prometheus metric family name the receiver can expose
// to the profile that emits it ("" for every profile).
func emitted(t *testing.T) map[string]string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "tcpconnreceiver", "metadata.yaml"))
	require.NoError(t, err)
	var md struct {
		Metrics map[string]any `json:"metrics"`
	}
	require.NoError(t, yaml.Unmarshal(raw, &md))
	out := map[string]string{}
	for name := range md.Metrics {
		profile := "otel"
		switch {
		case strings.HasPrefix(name, "istio_"):
			profile = "istio"
		case strings.HasPrefix(name, "kmesh_"):
			profile = "kmesh"
		case strings.HasPrefix(name, "tcpconn."):
			profile = ""
		}
		out[strings.ReplaceAll(name, ".", "_")] = profile
	}
	for _, h := range histograms {
		out[strings.ReplaceAll(h, ".", "_")+"_seconds"] = "otel"
	}
	return out
}

var metricRef = regexp.MustCompile(`\b(?:tcp|tcpconn|kmesh|istio)_[a-z_]+`)

// family strips the suffixes the prometheus exporter adds.
func family(name string) string {
	for _, s := range []string{"_bucket", "_count", "_sum", "_total"} {
		name = strings.TrimSuffix(name, s)
	}
	return name
}

// TestDashboardsUseEmittedMetrics: every metric a dashboard queries is one
// the receiver emits in the dashboard's profile.
func TestDashboardsUseEmittedMetrics(t *testing.T) {
	known := emitted(t)
	for file, profile := range map[string]string{"tcpconn-otel.json": "otel", "tcpconn-kmesh.json": "kmesh"} {
		t.Run(file, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join("dashboards", file))
			require.NoError(t, err)
			var d struct {
				Panels []struct {
					Title   string
					Targets []struct{ Expr string }
				}
			}
			require.NoError(t, json.Unmarshal(raw, &d))
			refs := 0
			for _, p := range d.Panels {
				require.NotEmpty(t, p.Targets, p.Title)
				for _, target := range p.Targets {
					for _, name := range metricRef.FindAllString(target.Expr, -1) {
						refs++
						got, ok := known[family(name)]
						if assert.True(t, ok, "%s: %s is not a metric the receiver emits", p.Title, name) && got != "" {
							assert.Equal(t, profile, got, "%s: %s belongs to the %s profile", p.Title, name, got)
						}
					}
				}
			}
			assert.Greater(t, refs, 8)
		})
	}
}
