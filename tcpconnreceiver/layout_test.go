package tcpconnreceiver

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The module's dependency rules (README, "Layout"): each package, with
// what it must never depend on, directly or not.
var forbiddenDeps = map[string][]string{
	"bpf":                                 {"go.opentelemetry.io/collector", "k8s.io/", mod + "/identity", mod + "/tcpconnreceiver"},
	"identity":                            {mod + "/bpf", "go.opentelemetry.io/collector", mod + "/tcpconnreceiver"},
	"natlookup":                           {"go.opentelemetry.io/collector", "k8s.io/", mod + "/bpf", mod + "/identity", mod + "/tcpconnreceiver"},
	"podnetns":                            {"go.opentelemetry.io/collector", "k8s.io/", mod + "/bpf", mod + "/identity", mod + "/tcpconnreceiver"},
	"identity/kube":                       {mod + "/bpf", "go.opentelemetry.io/collector/pdata", mod + "/tcpconnreceiver"},
	"tcpconnreceiver/internal/cidrfilter": {"go.opentelemetry.io/collector", "k8s.io/", mod + "/identity"},
	"tcpconnreceiver/internal/conntable":  {"go.opentelemetry.io/collector", "k8s.io/", mod + "/identity/kube", mod + "/podnetns"},
	"tcpconnreceiver/internal/aggregate":  {"go.opentelemetry.io/collector", "k8s.io/", mod + "/identity/kube", internal + "profile", internal + "metricemit"},
	"tcpconnreceiver/internal/profile":    {"k8s.io/", internal + "metricemit", internal + "accesslog"},
	"tcpconnreceiver/internal/metricemit": {"k8s.io/", internal + "accesslog"},
	"tcpconnreceiver/internal/accesslog":  {"k8s.io/", internal + "aggregate", internal + "profile", internal + "metricemit"},
}

const (
	mod      = "github.com/tcpconn/tcpconn"
	internal = mod + "/tcpconnreceiver/internal/"
)

// pdataUsers are the only packages that import pdata themselves: the
// emitting ones (and the generated builders they use).
var pdataUsers = []string{
	mod + "/tcpconnreceiver", internal + "metadata", internal + "profile", internal + "metricemit", internal + "accesslog",
}

func TestDependenciesPointOneWay(t *testing.T) {
	deps := goList(t, `{{.ImportPath}}{{range .Deps}} {{.}}{{end}}`)
	for pkg, banned := range forbiddenDeps {
		got, ok := deps[mod+"/"+pkg]
		require.True(t, ok, "package %s not found", pkg)
		for _, d := range got {
			for _, b := range banned {
				assert.False(t, strings.HasPrefix(d, b), "%s depends on %s (banned: %s)", pkg, d, b)
			}
		}
	}
	imports := goList(t, `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`)
	for pkg, got := range imports {
		for _, d := range got {
			if strings.HasPrefix(d, "go.opentelemetry.io/collector/pdata") {
				assert.Contains(t, pdataUsers, pkg, "%s imports %s: only the emitting packages may", pkg, d)
			}
		}
	}
}

// goList runs go list over the module's non-test packages and returns, per
// package, the list the template prints after its import path.
func goList(t *testing.T, format string) map[string][]string {
	t.Helper()
	cmd := exec.Command("go", "list", "-f", format, "./...")
	cmd.Dir = ".."
	out, err := cmd.Output()
	require.NoError(t, err, "go list")
	res := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		res[f[0]] = f[1:]
	}
	return res
}
