// Package aggregate counts connection records into series between
// flushes: series keys, views with their cardinality bound and overflow
// series, expiry of idle series, and the duration and RTT histograms'
// counts. What a key holds is the profile's choice (internal/profile
// fills it through each view's projection); turning series into pdata is
// internal/metricemit's job.
//
// It must not import pdata or the collector.
package aggregate
