package receiver

import (
	"github.com/tcpconn/tcpconn/bpf"
	"github.com/tcpconn/tcpconn/identity"
)

// maxTrackedConns bounds the per-connection identity cache. It only holds
// connections between their open and close records, so it reaches the
// bound only if close records were lost; then it is cleared and counted.
const maxTrackedConns = 1 << 20

// connEnds is the identity of a connection's two ends, resolved once.
type connEnds struct {
	local, peer *identity.Identity
}

var unresolved = &identity.Identity{}

// identities resolves each connection's ends once, at its first record,
// against the time it started, and keeps the answer until it closes: a
// long-lived connection keeps the identity its pod had, whatever happens
// to that pod later. An end that could not be resolved is tried again at
// the next record. Owned by the reader goroutine.
type identities struct {
	resolver identity.Resolver
	conns    map[uint64]connEnds
	// enabled is false for the address-only resolver: nothing to cache.
	enabled bool
	evicted int64
}

func newIdentities(r identity.Resolver) *identities {
	_, addressOnly := r.(identity.AddressOnly)
	return &identities{resolver: r, conns: map[uint64]connEnds{}, enabled: !addressOnly}
}

func (ids *identities) ends(rec *bpf.Record) (local, peer *identity.Identity) {
	if !ids.enabled {
		return unresolved, unresolved
	}
	cached, ok := ids.conns[rec.ConnID]
	if ok && cached.local != unresolved && cached.peer != unresolved {
		local, peer = cached.local, cached.peer
	} else {
		local, peer = ids.resolve(rec, cached)
	}
	if rec.ConnID == 0 {
		return local, peer
	}
	switch rec.Kind {
	case bpf.KindClose, bpf.KindFailure:
		delete(ids.conns, rec.ConnID)
	default:
		if !ok && len(ids.conns) >= maxTrackedConns {
			ids.evicted += int64(len(ids.conns))
			clear(ids.conns)
		}
		ids.conns[rec.ConnID] = connEnds{local, peer}
	}
	return local, peer
}

func (ids *identities) resolve(rec *bpf.Record, cached connEnds) (local, peer *identity.Identity) {
	at := rec.Start
	if at.IsZero() {
		at = rec.Time
	}
	localRole, peerRole := identity.RoleClient, identity.RoleServer
	if rec.Direction == bpf.DirectionInbound {
		localRole, peerRole = identity.RoleServer, identity.RoleClient
	}
	local, peer = cached.local, cached.peer
	if local == nil || local == unresolved {
		local = orUnresolved(ids.resolver.Resolve(rec.LocalAddr, rec.LocalPort, at, localRole))
	}
	if peer == nil || peer == unresolved {
		peer = orUnresolved(ids.resolver.Resolve(rec.PeerAddr, rec.PeerPort, at, peerRole))
	}
	return local, peer
}

func orUnresolved(id *identity.Identity) *identity.Identity {
	if id == nil {
		return unresolved
	}
	return id
}
