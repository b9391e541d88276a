package profile

import (
	"reflect"

	"go.opentelemetry.io/collector/pdata/pcommon"

	"github.com/tcpconn/tcpconn/bpf"
	"github.com/tcpconn/tcpconn/identity"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/aggregate"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/metadata"
)

// Profile names.
const (
	OTel  = "otel"
	Istio = "istio"
	Kmesh = "kmesh"
)

// Names lists the profiles, for validation.
var Names = []string{OTel, Istio, Kmesh}

// Options choose a profile and what it emits.
type Options struct {
	Name string
	// Workload and Service turn the views on (istio has one family and
	// ignores them).
	Workload, Service bool
	// Histograms adds the otel profile's histograms; HistogramEnabled,
	// when set, switches each by name (HistogramConnectionDuration, ...).
	Histograms       bool
	HistogramEnabled func(name string) bool
	// Metrics are the metrics' switches: the otel workload metrics' opt-in
	// attributes (peer.address, peer.port) widen the workload view's key.
	Metrics *metadata.MetricsBuilderConfig
}

// Profile is what a profile decides for each of its views.
type Profile struct {
	Views []View
	// LocalResource puts each local end on a Resource of its own (otel);
	// otherwise every series shares the receiver's Resource.
	LocalResource func(rb *metadata.ResourceBuilder, k *aggregate.Key)
	// LocalKey returns the part of a key that names the local end: series
	// with the same one share a Resource. Used with LocalResource.
	LocalKey func(k *aggregate.Key) LocalEnd
	// RecordBacklog records one local port's accept queue (its listening
	// sockets' queued connections and limit) on the local end's Resource;
	// nil when the profile has no such metrics. Used with LocalResource.
	RecordBacklog func(mb *metadata.MetricsBuilder, ts pcommon.Timestamp, port uint16, queued, limit int64)
}

// LocalEnd is the local end's slots of a key, as a map key.
type LocalEnd [numLocal]string

// Histogram is one histogram metric a view reports.
type Histogram struct {
	Name, Description, Unit string
	Bounds                  []float64
	Of                      func(s *aggregate.Series) *aggregate.Histogram
}

// View is one view of a profile: its aggregation spec and how its series
// are recorded.
type View struct {
	aggregate.ViewSpec
	// Record writes what a series reports at this flush (cumulative or
	// delta values) into its metrics.
	Record func(mb *metadata.MetricsBuilder, ts pcommon.Timestamp, k *aggregate.Key, v *aggregate.Values)
	// RecordOpen writes the open-connections count, always cumulative;
	// nil when the view has none.
	RecordOpen func(mb *metadata.MetricsBuilder, ts pcommon.Timestamp, k *aggregate.Key, open int64)
	// Histograms and HistogramAttributes: the view's histograms, when
	// ViewSpec.Histograms is on.
	Histograms          []Histogram
	HistogramAttributes func(k *aggregate.Key, attrs pcommon.Map)
}

// New returns the profile named in opts (otel when unknown: Config
// validation rejects unknown names before).
func New(opts Options) *Profile {
	switch opts.Name {
	case Istio:
		return istio()
	case Kmesh:
		return kmesh(opts)
	}
	return otel(opts)
}

// Specs returns the views' aggregation specs.
func (p *Profile) Specs() []aggregate.ViewSpec {
	out := make([]aggregate.ViewSpec, len(p.Views))
	for i := range p.Views {
		out[i] = p.Views[i].ViewSpec
	}
	return out
}

func orU(s string) string { return identity.OrUnknown(s) }

// Attribute values of the generated metrics.
func direction(d bpf.Direction) metadata.AttributeDirection {
	switch d {
	case bpf.DirectionOutbound:
		return metadata.AttributeDirectionOutbound
	case bpf.DirectionInbound:
		return metadata.AttributeDirectionInbound
	}
	return metadata.AttributeDirectionUnknown
}

func networkType(ipv6 bool) metadata.AttributeNetworkType {
	if ipv6 {
		return metadata.AttributeNetworkTypeIpv6
	}
	return metadata.AttributeNetworkTypeIpv4
}

// ErrorType is the error.type attribute of a failure series.
func ErrorType(e bpf.ErrorType) metadata.AttributeErrorType {
	return metadata.MapAttributeErrorType[e.String()]
}

// ViewAttribute is the view attribute of the self-metrics.
func ViewAttribute(v aggregate.ViewKind) metadata.AttributeView {
	return metadata.MapAttributeView[v.String()]
}

// Narrowed reports whether the configuration turned off an attribute that
// some metric has by default. Then two series can share a data point (the
// metrics builder sums them), which the emitter must keep together; by
// default every series is a data point of its own.
func Narrowed(mc *metadata.MetricsBuilderConfig) bool {
	if mc == nil {
		return false
	}
	def := metadata.DefaultMetricsBuilderConfig()
	got, want := reflect.ValueOf(mc.Metrics), reflect.ValueOf(def.Metrics)
	for i := range got.NumField() {
		attrs := got.Field(i).FieldByName("EnabledAttributes")
		if attrs.IsValid() && attrs.Len() < want.Field(i).FieldByName("EnabledAttributes").Len() {
			return true
		}
	}
	return false
}
