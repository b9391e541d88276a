package tcpconnreceiver

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/receiver/receivertest"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/tcpconn/tcpconn/bpf"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/metadata"
)

// A downstream that refuses everything does not stall the reader, and what
// it refused is counted in the collector's own receiver telemetry.
func TestRefusedDataIsCountedByObsReport(t *testing.T) {
	tel := componenttest.NewTelemetry()
	defer func() { require.NoError(t, tel.Shutdown(context.Background())) }()
	set := receivertest.NewNopSettings(metadata.Type)
	set.TelemetrySettings = tel.NewTelemetrySettings()

	cfg := createDefaultConfig()
	cfg.FlushInterval = time.Hour
	cfg.SeriesExpiry = 0
	f := NewFactory()
	refuse := consumertest.NewErr(errors.New("backend down"))
	mr, err := f.CreateMetrics(context.Background(), set, cfg, refuse)
	require.NoError(t, err)
	_, err = f.CreateLogs(context.Background(), set, cfg, refuse)
	require.NoError(t, err)
	r := mr.(*tcpconnReceiver)
	src := &scriptedSource{}
	r.open = func(bpf.Options) (recordSource, error) { return src, nil }
	require.NoError(t, r.Start(context.Background(), componenttest.NewNopHost()))
	recs := fixedRecords()
	src.push(recs...)
	require.Eventually(t, func() bool { return r.recordsRead.Load() == int64(len(recs)) }, 5*time.Second, time.Millisecond)
	require.NoError(t, r.Shutdown(context.Background()))

	refusedLogs := sumTelemetry(t, tel, "otelcol_receiver_refused_log_records")
	assert.Equal(t, int64(7), refusedLogs, "close and failure records of the fixed set")
	assert.Positive(t, sumTelemetry(t, tel, "otelcol_receiver_refused_metric_points"))
}

func sumTelemetry(t *testing.T, tel *componenttest.Telemetry, name string) int64 {
	t.Helper()
	m, err := tel.GetMetric(name)
	require.NoError(t, err, name)
	var total int64
	for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
		total += dp.Value
	}
	return total
}
