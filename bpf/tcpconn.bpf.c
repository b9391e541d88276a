//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * tcpconn probe: one record per TCP connection event, from the
 * inet_sock_set_state tracepoint.
 *
 * Two programs share one handler. tcpconn_btf (tp_btf) reads the socket
 * directly through BTF and keeps per-socket state in sk_storage. tcpconn_raw
 * (raw_tp) is the fallback for kernels without tp_btf: CO-RE probe reads and
 * an LRU hash keyed by socket address. The loader picks one at start.
 */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "tcpconn.h"

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Wake the reader only once this many bytes are pending; below it the
 * reader's short poll deadline picks the records up. Set by the loader. */
volatile const __u64 wakeup_bytes = 64 * 1024;

/* Ring buffer space one record takes: its 8-byte header and the record. */
#define RECORD_FOOTPRINT (sizeof(struct tcpconn_event) + 8)

/* Per-socket state, kept from the handshake to the close. */
struct sock_state {
	__u64 start_ns;
	__u64 conn_id;
	__u32 pid;
	__u8 direction;
	__u8 flags;
	__u8 pad[2];
	char comm[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TCPCONN_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

/* Connection ids: per CPU, the CPU number in the top bits, so no atomics. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} next_id SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sock_state);
} sk_state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, __u64);
	__type(value, struct sock_state);
} sk_state_hash SEC(".maps");

/* Makes bpf2go emit the Go type of the record. */
const struct tcpconn_event *unused_event __attribute__((unused));

/* Kernels before 6.x kept sk_flags in struct sock itself. */
struct sock___old {
	unsigned long sk_flags;
} __attribute__((preserve_access_index));

/* Read a field directly through BTF (tp_btf) or with a CO-RE probe read. */
#define RD(btf, p, f) ((btf) ? (p)->f : BPF_CORE_READ(p, f))

static __always_inline void stat_inc(__u32 key)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &key);
	if (v)
		*v += 1;
}

static __always_inline __u64 new_conn_id(void)
{
	__u32 zero = 0;
	__u64 *v = bpf_map_lookup_elem(&next_id, &zero);
	if (!v)
		return 0;
	*v += 1;
	return ((__u64)bpf_get_smp_processor_id() << 48) | *v;
}

static __always_inline struct sock_state *state_get(bool btf, struct sock *sk, bool create)
{
	if (btf)
		return bpf_sk_storage_get(&sk_state, sk, 0, create ? BPF_SK_STORAGE_GET_F_CREATE : 0);

	__u64 key = (__u64)sk;
	struct sock_state *st = bpf_map_lookup_elem(&sk_state_hash, &key);
	if (st || !create)
		return st;
	struct sock_state zero = {};
	bpf_map_update_elem(&sk_state_hash, &key, &zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(&sk_state_hash, &key);
}

static __always_inline void state_delete(bool btf, struct sock *sk)
{
	if (btf) {
		bpf_sk_storage_delete(&sk_state, sk);
		return;
	}
	__u64 key = (__u64)sk;
	bpf_map_delete_elem(&sk_state_hash, &key);
}

static __always_inline void state_init(struct sock_state *st, __u8 direction, __u64 now)
{
	st->start_ns = now;
	st->conn_id = new_conn_id();
	st->direction = direction;
	st->flags = 0;
	if (direction == TCPCONN_DIR_OUTBOUND) {
		/* connect() runs in the caller's context: pid and comm are real. */
		st->pid = bpf_get_current_pid_tgid() >> 32;
		bpf_get_current_comm(st->comm, sizeof(st->comm));
	} else {
		st->pid = 0;
		__builtin_memset(st->comm, 0, sizeof(st->comm));
	}
}

static __always_inline bool fin_received(bool btf, struct sock *sk)
{
	unsigned long flags;

	if (bpf_core_field_exists(((struct sock___old *)sk)->sk_flags))
		flags = BPF_CORE_READ((struct sock___old *)sk, sk_flags);
	else
		flags = RD(btf, sk, __sk_common.skc_flags);
	return flags & (1UL << bpf_core_enum_value(enum sock_flags, SOCK_DONE));
}

static __always_inline void copy_addr(bool btf, __u8 *dst, const void *src, __u32 len)
{
	if (btf) {
		if (len == 4)
			__builtin_memcpy(dst, src, 4);
		else
			__builtin_memcpy(dst, src, 16);
	} else {
		bpf_core_read(dst, len, src);
	}
}

/* fill writes one record of the socket's current counters into e. */
static __always_inline void fill(bool btf, struct tcpconn_event *e, struct sock *sk, struct tcp_sock *tp,
				 struct sock_state *st, __u8 kind, int oldstate, int newstate, __u16 family, __u64 now)
{
	e->ts_ns = now;
	e->kind = kind;
	e->old_state = oldstate;
	e->new_state = newstate;
	e->family = family;
	e->flags = 0;
	e->pad = 0;
	e->sk_err = RD(btf, sk, sk_err);
	if (!btf)
		e->netns_ino = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	else
		e->netns_ino = sk->__sk_common.skc_net.net->ns.inum;

	if (st) {
		e->start_ns = st->start_ns;
		e->conn_id = st->conn_id;
		e->direction = st->direction;
		e->flags = st->flags & TCPCONN_F_RECORD_MASK;
		e->pid = st->pid;
		__builtin_memcpy(e->comm, st->comm, sizeof(e->comm));
	} else {
		e->start_ns = 0;
		e->conn_id = 0;
		e->direction = TCPCONN_DIR_UNKNOWN;
		e->flags = TCPCONN_F_ADOPTED;
		e->pid = 0;
		__builtin_memset(e->comm, 0, sizeof(e->comm));
	}

	__builtin_memset(e->saddr, 0, sizeof(e->saddr));
	__builtin_memset(e->daddr, 0, sizeof(e->daddr));
	if (family == AF_INET) {
		copy_addr(btf, e->saddr, &sk->__sk_common.skc_rcv_saddr, 4);
		copy_addr(btf, e->daddr, &sk->__sk_common.skc_daddr, 4);
	} else {
		copy_addr(btf, e->saddr, &sk->__sk_common.skc_v6_rcv_saddr, 16);
		copy_addr(btf, e->daddr, &sk->__sk_common.skc_v6_daddr, 16);
	}
	/* skc_num is 0 once the socket is unhashed at close: use inet_sport. */
	e->sport = bpf_ntohs(RD(btf, tp, inet_conn.icsk_inet.inet_sport));
	e->dport = bpf_ntohs(RD(btf, sk, __sk_common.skc_dport));

	__u64 sent = RD(btf, tp, bytes_sent);
	__u64 retrans = RD(btf, tp, bytes_retrans);
	__u64 received = RD(btf, tp, bytes_received);
	/* bytes_received counts the FIN's sequence number too. */
	if (received > 0 && fin_received(btf, sk)) {
		received--;
		e->flags |= TCPCONN_F_FIN_RCVD;
	}
	e->bytes_sent = sent - retrans;
	e->bytes_received = received;
	e->bytes_retrans = retrans;
	e->total_retrans = RD(btf, tp, total_retrans);
	e->lost = RD(btf, tp, lost);
	e->segs_in = RD(btf, tp, segs_in);
	e->segs_out = RD(btf, tp, segs_out);
	e->srtt_us = RD(btf, tp, srtt_us) >> 3;
	e->rttvar_us = RD(btf, tp, mdev_us) >> 2;
	e->rtt_min_us = RD(btf, tp, rtt_min.s[0].v);
}

static __always_inline void emit(bool btf, struct sock *sk, struct tcp_sock *tp, struct sock_state *st,
				 __u8 kind, int oldstate, int newstate, __u16 family, __u64 now)
{
	struct tcpconn_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		stat_inc(TCPCONN_STAT_DROPPED);
		return;
	}
	fill(btf, e, sk, tp, st, kind, oldstate, newstate, family, now);

	/* Wake the reader only when this record carries the pending data across
	 * the threshold. Waking on every record past it costs an IPI each while
	 * the reader waits for a CPU; the reader's poll deadline is the backstop
	 * when concurrent producers step over the crossing. */
	__u64 flags = BPF_RB_NO_WAKEUP;
	__u64 avail = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	if (avail >= wakeup_bytes && avail < wakeup_bytes + RECORD_FOOTPRINT)
		flags = BPF_RB_FORCE_WAKEUP;
	bpf_ringbuf_submit(e, flags);
	stat_inc(TCPCONN_STAT_EMITTED);
}

/* interesting is the cheap first test, on the tracepoint's arguments only:
 * of the ten or so state changes of a connection, four matter. */
static __always_inline bool interesting(int oldstate, int newstate)
{
	switch (newstate) {
	case TCP_SYN_SENT:
	case TCP_ESTABLISHED:
		return oldstate != newstate;
	case TCP_SYN_RECV:
		return oldstate == TCP_LISTEN; /* a new child socket */
	case TCP_CLOSE:
		/* not a listener closing */
		return oldstate != TCP_LISTEN && oldstate != TCP_CLOSE;
	}
	return false;
}

static __always_inline int handle(bool btf, struct sock *sk, struct tcp_sock *tp, int oldstate, int newstate)
{

	__u16 family = RD(btf, sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return 0;

	__u64 now = bpf_ktime_get_boot_ns();
	struct sock_state *st;

	switch (newstate) {
	case TCP_SYN_SENT:
	case TCP_SYN_RECV:
		st = state_get(btf, sk, true);
		if (!st) {
			stat_inc(TCPCONN_STAT_NO_STATE);
			return 0;
		}
		state_init(st, newstate == TCP_SYN_SENT ? TCPCONN_DIR_OUTBOUND : TCPCONN_DIR_INBOUND, now);
		return 0;
	case TCP_ESTABLISHED:
		st = state_get(btf, sk, true);
		if (!st) {
			stat_inc(TCPCONN_STAT_NO_STATE);
		} else if (st->conn_id == 0) {
			/* Handshake began before the probe was attached. */
			st->conn_id = new_conn_id();
			st->flags = TCPCONN_F_ADOPTED;
		}
		emit(btf, sk, tp, st, TCPCONN_KIND_OPEN, oldstate, newstate, family, now);
		return 0;
	case TCP_CLOSE:
		st = state_get(btf, sk, false);
		/* The report walk skips a closing socket: its close record carries
		 * the rest, and must not race an update for the same counters. */
		if (st)
			st->flags |= TCPCONN_F_CLOSING;
		emit(btf, sk, tp, st,
		     (oldstate == TCP_SYN_SENT || oldstate == TCP_SYN_RECV) ? TCPCONN_KIND_FAILURE
									    : TCPCONN_KIND_CLOSE,
		     oldstate, newstate, family, now);
		/* sk_storage goes with the socket; the hash map must be cleaned. */
		if (st && !btf)
			state_delete(btf, sk);
		return 0;
	default:
		return 0;
	}
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tcpconn_btf, struct sock *sk, int oldstate, int newstate)
{
	if (!interesting(oldstate, newstate) || sk->sk_protocol != IPPROTO_TCP)
		return 0;
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return 0;
	return handle(true, sk, tp, oldstate, newstate);
}

SEC("raw_tp/inet_sock_set_state")
int BPF_PROG(tcpconn_raw, struct sock *sk, int oldstate, int newstate)
{
	if (!interesting(oldstate, newstate) || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	return handle(false, sk, (struct tcp_sock *)sk, oldstate, newstate);
}

/* Every report_interval the loader runs this over the TCP sockets of every
 * network namespace: one update record per tracked connection, idle or not,
 * written to the iterator's seq_file rather than the ring buffer. (A walk
 * of the sk_storage map itself is quadratic on hosts with few CPUs: its
 * hash has one bucket per CPU, and every read of the seq_file restarts the
 * bucket from its head.) */
SEC("iter/tcp")
int tcpconn_report(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct tcpconn_event e;

	if (!skc)
		return 0;
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(skc);
	if (!tp)
		return 0;
	struct sock *sk = &tp->inet_conn.icsk_inet.sk;
	struct sock_state *st = bpf_sk_storage_get(&sk_state, sk, 0, 0);
	if (!st || (st->flags & TCPCONN_F_CLOSING) || st->conn_id == 0)
		return 0;
	int state = skc->skc_state;
	/* Handshakes in progress are reported by their open or failure. */
	if (state == TCP_SYN_SENT || state == TCP_SYN_RECV || state == TCP_LISTEN || state == TCP_CLOSE)
		return 0;
	__u16 family = skc->skc_family;
	if (family != AF_INET && family != AF_INET6)
		return 0;
	fill(true, &e, sk, tp, st, TCPCONN_KIND_UPDATE, state, state, family, bpf_ktime_get_boot_ns());
	bpf_seq_write(ctx->meta->seq, &e, sizeof(e));
	return 0;
}

/* At start, the loader runs this over the TCP sockets of every network
 * namespace: established connections the probe never saw get per-socket
 * state (flagged adopted) and are reported from then on. */
SEC("iter/tcp")
int tcpconn_adopt(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	if (!skc)
		return 0;
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(skc);
	if (!tp)
		return 0; /* request and time-wait sockets */
	int state = skc->skc_state;
	if (state == TCP_LISTEN || state == TCP_SYN_SENT || state == TCP_SYN_RECV || state == TCP_CLOSE)
		return 0;
	struct sock_state *st = bpf_sk_storage_get(&sk_state, tp, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st) {
		stat_inc(TCPCONN_STAT_NO_STATE);
		return 0;
	}
	if (st->conn_id == 0) {
		st->conn_id = new_conn_id();
		st->flags = TCPCONN_F_ADOPTED;
		st->direction = TCPCONN_DIR_UNKNOWN;
		st->start_ns = 0;
		__u32 one = 1;
		bpf_seq_write(ctx->meta->seq, &one, sizeof(one));
	}
	return 0;
}
