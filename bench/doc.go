// Package bench measures what observing TCP connections costs: a bounded
// connect/close storm run by a separate process between two network
// namespaces, with no observer, with the tcpconn probe alone, with the
// whole collector, and with tcplife (libbpf-tools) for comparison.
// `sudo make overhead` runs it; nothing here asserts on time.
package bench
