// Package e2e runs the ocb-built collector (bin/otelcol-tcpconn) with real
// configurations and checks what the standard exporters produce.
package e2e
