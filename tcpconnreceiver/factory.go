package tcpconnreceiver

import (
	"context"
	"fmt"
	"sync"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/receiver"

	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/metadata"
)

// NewFactory returns the tcpconn receiver factory. Metrics and logs
// pipelines that name the same receiver share one probe: the kernel sees
// each connection once and both signals come from the same records.
func NewFactory() receiver.Factory {
	s := &shared{instances: map[component.ID]*tcpconnReceiver{}}
	return receiver.NewFactory(
		metadata.Type,
		func() component.Config { return createDefaultConfig() },
		receiver.WithMetrics(s.createMetrics, metadata.MetricsStability),
		receiver.WithLogs(s.createLogs, metadata.LogsStability),
	)
}

// shared maps a receiver ID to its one instance. It lives in the factory,
// not in a package variable, so separate factories never share state.
type shared struct {
	mu        sync.Mutex
	instances map[component.ID]*tcpconnReceiver
}

func (s *shared) get(set receiver.Settings, cfg component.Config) (*tcpconnReceiver, error) {
	c, ok := cfg.(*Config)
	if !ok {
		return nil, fmt.Errorf("tcpconn: unexpected config type %T", cfg)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.instances[set.ID]; ok {
		return r, nil
	}
	r := newReceiver(set, c, func() {
		s.mu.Lock()
		delete(s.instances, set.ID)
		s.mu.Unlock()
	})
	s.instances[set.ID] = r
	return r, nil
}

func (s *shared) createMetrics(_ context.Context, set receiver.Settings, cfg component.Config, next consumer.Metrics) (receiver.Metrics, error) {
	r, err := s.get(set, cfg)
	if err != nil {
		return nil, err
	}
	r.setMetrics(next)
	return r, nil
}

func (s *shared) createLogs(_ context.Context, set receiver.Settings, cfg component.Config, next consumer.Logs) (receiver.Logs, error) {
	r, err := s.get(set, cfg)
	if err != nil {
		return nil, err
	}
	r.setLogs(next)
	return r, nil
}
