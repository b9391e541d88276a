package receiver

import (
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/tcpconn/tcpconn/identity"
	"github.com/tcpconn/tcpconn/receiver/internal/metadata"
)

func TestErrorTypes(t *testing.T) {
	for errno, want := range map[syscall.Errno]metadata.AttributeErrorType{
		syscall.ECONNREFUSED: metadata.AttributeErrorTypeRefused,
		syscall.ETIMEDOUT:    metadata.AttributeErrorTypeTimedOut,
		syscall.ECONNRESET:   metadata.AttributeErrorTypeReset,
		syscall.EHOSTUNREACH: metadata.AttributeErrorTypeUnreachable,
		syscall.ENETUNREACH:  metadata.AttributeErrorTypeUnreachable,
		0:                    metadata.AttributeErrorTypeAborted,
		syscall.EPERM:        metadata.AttributeErrorTypeOther,
	} {
		assert.Equal(t, want, errorTypeAttr(int32(errno)), "errno %d", errno)
	}
}

func TestAggregatorSumsPerSeries(t *testing.T) {
	a := newAggregator()
	none := &identity.Identity{}
	recs := fixedRecords()
	for range 3 {
		tr := newTracker(identity.AddressOnly{}, false)
		for i := range recs {
			o, _ := tr.observe(&recs[i])
			a.add(&recs[i], &o)
		}
	}
	out := keyOf(&recs[2], none, none)
	// Per round: connection 1 (100000 / 5000, 2 retransmits, 1 lost) and the
	// live connection 8 (4096 / 1024, 1 retransmit), which stays open.
	assert.Equal(t, seriesValue{opened: 3, closed: 3, open: 3, sent: 3 * (100000 + 4096), received: 3 * (5000 + 1024), retrans: 3 * (2 + 1), lost: 3}, *a.series[out])
	refused := failureKey{seriesKey: out, errorType: metadata.AttributeErrorTypeRefused}
	assert.Equal(t, int64(3), a.failures[refused])
}

// BenchmarkAggregate is the metrics hot path per record: filter, identity
// lookup of both ends, series update. It must not allocate.
func BenchmarkAggregate(b *testing.B) {
	r := &tcpconnReceiver{
		agg:    newAggregator(),
		track:  newTracker(identity.AddressOnly{}, false),
		filter: newAddrFilter(FilterConfig{IncludeCIDRs: []string{"10.0.0.0/8"}}),
		mb:     &metadata.MetricsBuilder{},
	}
	recs := fixedRecords()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		r.handle(&recs[i%len(recs)])
		i++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}
