//go:build linux

package tcpconnreceiver

import (
	"go.uber.org/zap"

	"github.com/tcpconn/tcpconn/bpf"
)

func openProbe(opts bpf.Options) (recordSource, error) {
	p, err := bpf.Load(opts)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// logAttached says how the probe attached, and why not tp_btf if it fell
// back.
func logAttached(logger *zap.Logger, src recordSource) {
	p, ok := src.(*bpf.Probe)
	if !ok {
		return
	}
	fields := []zap.Field{zap.String("attach_mode", string(p.Mode()))}
	if reason := p.FallbackReason(); reason != nil {
		fields = append(fields, zap.NamedError("tp_btf_error", reason))
	}
	logger.Info("tcpconn probe attached", fields...)
}
