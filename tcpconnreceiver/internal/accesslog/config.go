package accesslog

import (
	"errors"
	"fmt"
	"time"
)

// Config chooses the access-log records.
type Config struct {
	// Open emits a record when a connection is established.
	Open bool `mapstructure:"open"`
	// Close emits a record when an established connection ends.
	Close bool `mapstructure:"close"`
	// Failure emits a record when a handshake fails.
	Failure bool `mapstructure:"failure"`
	// Update emits a record for every open connection at each report.
	Update bool `mapstructure:"update"`
	// MaxBatchSize is the most records put in one pdata batch.
	MaxBatchSize int `mapstructure:"max_batch_size"`
	// FlushInterval is the longest a record waits for its batch to fill.
	FlushInterval time.Duration `mapstructure:"flush_interval"`
	// Body is what a record's body holds: BodyLine, the one-line summary
	// (Kmesh / ztunnel field order) of values the attributes also carry, or
	// BodyNone, for stores that index the attributes and would only keep
	// the line twice.
	Body string `mapstructure:"body"`
	// QueueSize is how many batches may wait for a slow logs consumer
	// before new batches are dropped (and counted).
	QueueSize int `mapstructure:"queue_size"`
	// Filter drops access-log records (never metrics) by content.
	Filter FilterConfig `mapstructure:"filter"`
	// SamplingRatio keeps this fraction of connections' records, chosen per
	// connection so its open, updates and close stay together. Failures and
	// resets are always kept.
	SamplingRatio float64 `mapstructure:"sampling_ratio"`
}

// Body choices.
const (
	BodyLine = "line"
	BodyNone = "none"
)

// FilterConfig selects access-log records. Every record it drops is
// counted in tcpconn.logs.filtered by reason.
type FilterConfig struct {
	// IncludeNamespaces keeps only records with an end in one of these
	// Kubernetes namespaces.
	IncludeNamespaces []string `mapstructure:"include_namespaces"`
	// ExcludeNamespaces drops records with an end in one of these.
	ExcludeNamespaces []string `mapstructure:"exclude_namespaces"`
	// FailuresOnly keeps only failures and connections closed by a reset.
	FailuresOnly bool `mapstructure:"failures_only"`
	// MinDuration drops close records of shorter connections.
	MinDuration time.Duration `mapstructure:"min_duration"`
	// MinBytes drops close and update records of connections that carried
	// fewer bytes, both ways together.
	MinBytes uint64 `mapstructure:"min_bytes"`
}

// DefaultConfig logs closes and failures, in batches of up to 1000 records
// sent at least every second.
func DefaultConfig() Config {
	return Config{
		Close:         true,
		Failure:       true,
		MaxBatchSize:  1000,
		FlushInterval: time.Second,
		Body:          BodyLine,
		QueueSize:     100,
		SamplingRatio: 1,
	}
}

// Validate names every invalid field under prefix (e.g. "logs.").
func (c *Config) Validate(prefix string) error {
	var errs []error
	if c.MaxBatchSize <= 0 {
		errs = append(errs, fmt.Errorf("%smax_batch_size: must be positive, got %d", prefix, c.MaxBatchSize))
	}
	if c.FlushInterval <= 0 {
		errs = append(errs, fmt.Errorf("%sflush_interval: must be positive, got %v", prefix, c.FlushInterval))
	}
	if c.Body != BodyLine && c.Body != BodyNone {
		errs = append(errs, fmt.Errorf("%sbody: must be %s or %s, got %q", prefix, BodyLine, BodyNone, c.Body))
	}
	if c.SamplingRatio < 0 || c.SamplingRatio > 1 {
		errs = append(errs, fmt.Errorf("%ssampling_ratio: must be between 0 and 1, got %v", prefix, c.SamplingRatio))
	}
	if c.Filter.MinDuration < 0 {
		errs = append(errs, fmt.Errorf("%sfilter.min_duration: must not be negative, got %v", prefix, c.Filter.MinDuration))
	}
	if c.QueueSize <= 0 {
		errs = append(errs, fmt.Errorf("%squeue_size: must be positive, got %d", prefix, c.QueueSize))
	}
	return errors.Join(errs...)
}
