package aggregate

import (
	"github.com/tcpconn/tcpconn/bpf"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/conntable"
)

// NumLabels is how many string labels a key holds: enough for Istio's
// label set (both ends' blocks of eight and three labels between them).
const NumLabels = 20

// Key identifies one series of one view. A profile's projection fills it;
// which label sits in which slot is the profile's business. Strings are
// the resolver's shared values or constants, so filling a key does not
// allocate.
type Key struct {
	Labels    [NumLabels]string
	Direction bpf.Direction
	// Error is set on failure series only.
	Error bpf.ErrorType
	IPv6  bool
	// PeerAddr and PeerPort are the opt-in peer address attributes, filled
	// by the aggregator for views that ask for them.
	PeerAddr string
	PeerPort uint16
}

// Overflow is where records go once a view holds its limit of series:
// every label reads "overflow".
const Overflow = "overflow"

var overflowKey = func() Key {
	var k Key
	for i := range k.Labels {
		k.Labels[i] = Overflow
	}
	return k
}()

// Project fills k for a connection; e is set for failures. It reads c's
// ends (Local, Peer: the resolver's shared values, never modified),
// Direction and IPv6 only: the aggregator remembers a connection's series
// by them (Aggregator.seriesOf).
type Project func(c *conntable.Conn, e bpf.ErrorType, k *Key)
