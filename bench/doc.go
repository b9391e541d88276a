// Package bench measures what observing TCP connections costs: a bounded
// connect/close storm run by a separate process between two network
// namespaces, with no observer, with the tcpconn probe alone, with the
// whole collector, and with tcplife (libbpf-tools) for comparison; and,
// with Kubernetes identity from a real API server, on a storm to a
// ClusterIP with the conntrack lookup off and on (`sudo make overhead-nat`).
// `sudo make overhead` runs it; nothing here asserts on time.
package bench
