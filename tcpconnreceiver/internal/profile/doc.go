// Package profile is the one place that decides, per profile (otel,
// istio, kmesh), what a series is called and labelled: which views it
// has, how a connection projects into a view's series key (which
// identity fields, in which slot), and which generated metric each
// series' values are recorded into, with which attributes. Adding a
// profile or a label touches this package, metadata.yaml and the golden
// files.
//
// It imports pdata only through the generated metrics builder; the
// temporality, start times and Resources around the records are
// internal/metricemit's.
package profile
