//go:build linux

package bpf

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// The listening sockets' accept queues come from sock_diag, the kernel's
// socket dump that ss uses, asked for listeners only: the kernel then
// reads its listening hash and never its established one, so a namespace
// costs what its listeners do. (The report walk used to find them with
// iter/tcp, which scans the host's whole established hash in each
// namespace.)

// inet_diag's wire format (linux/inet_diag.h), native-endian but for the
// ports and addresses.
const (
	sockDiagByFamily = 20 // SOCK_DIAG_BY_FAMILY
	diagReqLen       = 56 // struct inet_diag_req_v2
	diagMsgLen       = 72 // struct inet_diag_msg
	diagListen       = uint8(StateListen)
)

// diagBuf sizes the dump's receive buffer: the kernel fills it with as
// many messages as fit.
const diagBuf = 32 << 10

// readBacklogs calls fn with each listening TCP socket of the calling
// thread's network namespace, IPv4 and IPv6, and its accept queue: in an
// inet_diag_msg of a listener, rqueue is the queue's length and wqueue its
// limit.
func readBacklogs(buf []byte, fn func(local netip.Addr, port uint16, queued, limit uint32)) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return fmt.Errorf("sock_diag socket: %w", err)
	}
	defer unix.Close(fd)
	for seq, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		if err := diagDump(fd, uint32(seq+1), family, buf, fn); err != nil {
			return fmt.Errorf("sock_diag dump of listeners (family %d): %w", family, err)
		}
	}
	return nil
}

func diagDump(fd int, seq uint32, family uint8, buf []byte, fn func(netip.Addr, uint16, uint32, uint32)) error {
	var req [unix.NLMSG_HDRLEN + diagReqLen]byte
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], sockDiagByFamily)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	ne.PutUint32(req[8:], seq)
	r := req[unix.NLMSG_HDRLEN:]
	r[0] = family
	r[1] = unix.IPPROTO_TCP
	ne.PutUint32(r[4:], 1<<diagListen) // idiag_states
	if err := unix.Sendto(fd, req[:], 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return err
		}
		msgs := buf[:n]
		for len(msgs) >= unix.NLMSG_HDRLEN {
			l := int(ne.Uint32(msgs[0:]))
			typ := ne.Uint16(msgs[4:])
			if l < unix.NLMSG_HDRLEN || l > len(msgs) {
				return fmt.Errorf("netlink message of %d bytes in %d", l, len(msgs))
			}
			switch typ {
			case unix.NLMSG_DONE:
				return nil
			case unix.NLMSG_ERROR:
				if l >= unix.NLMSG_HDRLEN+4 {
					if e := int32(ne.Uint32(msgs[unix.NLMSG_HDRLEN:])); e != 0 {
						return unix.Errno(-e)
					}
				}
				return nil
			case sockDiagByFamily:
				if l >= unix.NLMSG_HDRLEN+diagMsgLen {
					diagListener(msgs[unix.NLMSG_HDRLEN:l], fn)
				}
			}
			msgs = msgs[min(len(msgs), (l+unix.NLMSG_ALIGNTO-1)&^(unix.NLMSG_ALIGNTO-1)):]
		}
	}
}

// diagListener decodes one inet_diag_msg: family, state, timer, retrans,
// then struct inet_diag_sockid (sport, dport, src[16], dst[16], if,
// cookie[8]), expires, rqueue, wqueue, uid, inode.
func diagListener(m []byte, fn func(netip.Addr, uint16, uint32, uint32)) {
	if m[1] != diagListen {
		return
	}
	port := binary.BigEndian.Uint16(m[4:])
	var local netip.Addr
	if m[0] == unix.AF_INET {
		local = netip.AddrFrom4([4]byte(m[8:12]))
	} else {
		local = netip.AddrFrom16([16]byte(m[8:24])).Unmap()
	}
	ne := binary.NativeEndian
	fn(local, port, ne.Uint32(m[56:]), ne.Uint32(m[60:]))
}
