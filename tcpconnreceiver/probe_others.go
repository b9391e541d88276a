//go:build !linux

package tcpconnreceiver

import (
	"errors"

	"go.uber.org/zap"

	"github.com/tcpconn/tcpconn/bpf"
)

func openProbe(bpf.Options) (recordSource, error) {
	return nil, errors.New("the tcpconn receiver runs on Linux only: its probe is an eBPF program")
}

func logAttached(*zap.Logger, recordSource) {}
