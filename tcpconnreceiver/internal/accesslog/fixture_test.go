package accesslog

import (
	"github.com/tcpconn/tcpconn/bpf"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/fixture"
)

// The shared fixture under the names the tests here use.
var t0 = fixture.T0

type staticResolver = fixture.StaticResolver

func fixedRecords() []bpf.Record    { return fixture.Records() }
func fixedResolver() staticResolver { return fixture.Resolver() }
