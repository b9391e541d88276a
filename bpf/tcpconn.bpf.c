//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * tcpconn probe: one record per TCP connection event, from the
 * inet_sock_set_state tracepoint.
 *
 * Two programs share one handler and the handshake table. tcpconn_btf
 * (tp_btf) reads the socket directly through BTF; tcpconn_raw (raw_tp) is
 * the fallback for kernels without tp_btf, with CO-RE probe reads. The
 * loader picks one at start.
 */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "tcpconn.h"

#define IPPROTO_TCP 6

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Wake the reader only once this many bytes are pending; below it the
 * reader's short poll deadline picks the records up. Set by the loader. */
volatile const __u64 wakeup_bytes = 64 * 1024;

/* Ring buffer space one record takes: its 8-byte header and the record. */
#define RECORD_FOOTPRINT (sizeof(struct tcpconn_event) + 8)

/* What a connect() leaves for the end of its handshake: the caller's
 * context is only there at SYN_SENT. sk is the socket's handshake_key, 0
 * while the slot is free. */
struct handshake {
	__u64 sk;
	__u64 start_ns;
	__u32 pid;
	__u32 pad;
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

/* Outbound handshakes in progress: written at SYN_SENT, taken at
 * ESTABLISHED or at the failure. Nothing is kept per connection after its
 * handshake: connection ids are socket cookies, and user space remembers
 * the rest from the open record. (Per socket state for the whole
 * connection, in sk_storage or a hash, was measured at more than half of
 * the program's cost on a connection storm: allocation, memcg accounting,
 * RCU frees, or hash operations at every state change.)
 *
 * A set-associative table in an array, not a hash map: a socket's
 * handshake_key picks a set of handshake_ways slots, a connect claims a
 * free one with a compare-and-swap and the end of the handshake frees it.
 * No lock, no allocation, no helper call but the cookie's (the hash map's
 * update, lookup and delete measured 0.2 us more per connection on a
 * storm). A socket always leaves its handshake (SYN_SENT, or SYN_RECV after
 * a simultaneous open) for ESTABLISHED or CLOSE, where its slot is freed,
 * so the table holds only handshakes in flight; when a socket's set is
 * full its open record goes out without process and start time, counted in
 * TCPCONN_STAT_NO_STATE. Only the socket itself frees its slot, and its
 * own state changes are serialised by the socket's lock. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TCPCONN_HANDSHAKE_SLOTS);
	__type(key, __u32);
	__type(value, struct handshake);
} connecting SEC(".maps");

/* The table's shape, set by the loader to fit the map: handshake_sets is a
 * power of two and handshake_sets * handshake_ways its size. */
volatile const __u32 handshake_sets = TCPCONN_HANDSHAKE_SLOTS / TCPCONN_HANDSHAKE_WAYS;
volatile const __u32 handshake_ways = TCPCONN_HANDSHAKE_WAYS;

/* Mixed into raw_tp mode's connection ids, which are derived from the
 * socket's address (no socket cookies there): set at load so that ids do
 * not reveal kernel addresses. */
volatile const __u64 id_secret = 0;

/* Puts the record and the shared constants in the object's BTF, for
 * bpf2go to generate their Go types and constants from. */
const struct tcpconn_shared *unused_shared __attribute__((unused));

/* Kernels before 6.x kept sk_flags in struct sock itself. */
struct sock___old {
	unsigned long sk_flags;
} __attribute__((preserve_access_index));

/* Read a field directly through BTF (tp_btf) or with a CO-RE probe read. */
#define RD(btf, p, f) ((btf) ? (p)->f : BPF_CORE_READ(p, f))

/* stat_inc is atomic although the counters are per CPU: the backup program
 * runs in a softirq that may interrupt the probe between a load and a store. */
static __always_inline void stat_inc(enum tcpconn_stat stat)
{
	__u32 key = stat;
	__u64 *v = bpf_map_lookup_elem(&stats, &key);
	if (v)
		__sync_fetch_and_add(v, 1);
}

/* conn_id names a connection in all its records: the socket cookie, unique
 * per boot. raw_tp programs cannot ask for cookies: there it is a keyed mix
 * (splitmix64's finaliser) of the socket's address with the connection's
 * ports and peer, so that a socket address used again by a later
 * connection gives another id. Called once e's addresses are filled. */
static __always_inline __u64 conn_id(bool btf, struct sock *sk, struct tcpconn_event *e)
{
	if (btf)
		return bpf_get_socket_cookie(sk);
	__u32 peer;
	__builtin_memcpy(&peer, &e->daddr[e->family == TCPCONN_AF_INET ? 0 : 12], 4);
	__u64 z = (__u64)sk ^ id_secret ^ ((__u64)e->sport << 48) ^ ((__u64)e->dport << 32) ^ peer;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return (z ^ (z >> 31)) | 1; /* never 0: 0 means no id */
}

static __always_inline unsigned long sock_flags(bool btf, struct sock *sk)
{
	if (bpf_core_field_exists(((struct sock___old *)sk)->sk_flags))
		return BPF_CORE_READ((struct sock___old *)sk, sk_flags);
	return RD(btf, sk, __sk_common.skc_flags);
}

/* Resets the local end sent before its close record, when the kernel
 * sent one on a socket still open (tcp_abort, an orphan out of memory or
 * past its FIN_WAIT2 time, a keepalive timeout): tp_btf/tcp_send_reset
 * marks the socket here. Only sockets that send a reset get an entry, so
 * the close path of every other socket finds sk_bpf_storage empty and
 * looks no further. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u8);
} reset_sent SEC(".maps");

/* reset_follows: a close with no socket error from these states is an
 * abort, and the kernel sends the RST right after the state change, so
 * tcp_send_reset comes too late for the close record: tcp_close() with
 * unread data, SO_LINGER 0 (tcp_disconnect), a listener closing with
 * children it never accepted. No graceful close leaves ESTABLISHED,
 * CLOSE_WAIT or FIN_WAIT1 for CLOSE directly (a reset received or a
 * timeout sets sk_err first); from FIN_WAIT2 only SO_LINGER 0 aborts
 * before the peer's FIN. */
static __always_inline bool reset_follows(bool btf, struct sock *sk, int oldstate, unsigned long flags)
{
	switch (oldstate) {
	case TCP_ESTABLISHED:
	case TCP_CLOSE_WAIT:
	case TCP_FIN_WAIT1:
		return true;
	case TCP_FIN_WAIT2:
		return (flags & (1UL << bpf_core_enum_value(enum sock_flags, SOCK_LINGER))) &&
		       !(flags & (1UL << bpf_core_enum_value(enum sock_flags, SOCK_DONE))) &&
		       RD(btf, sk, sk_lingertime) == 0;
	}
	return false;
}

/* reset_was_sent: tcp_send_reset marked the socket (tp_btf only: raw_tp
 * programs cannot read sk_storage). */
static __always_inline bool reset_was_sent(bool btf, struct sock *sk)
{
	if (!btf || !sk->sk_bpf_storage)
		return false;
	__u8 *v = bpf_sk_storage_get(&reset_sent, sk, 0, 0);
	return v && *v;
}

/* Retransmits by type (enum tcpconn_retrans_type), per socket: only
 * sockets that retransmit get an entry (tcp_retransmit_skb, or a
 * listener's child whose SYN-ACK was sent again), so fill() of every other
 * socket finds sk_bpf_storage empty, or holding reset_sent only. Written
 * under the socket's lock (the retransmit paths, the state change) and
 * read under it (the state change, the walk). */
struct retrans {
	__u32 n[TCPCONN_RETRANS_TYPES];
	/* typed: the socket's total_retrans as far as n counts it. Each
	 * retransmit adds what total_retrans grew by since, not its own
	 * segments: one the kernel kept the program from (a recursion miss)
	 * is typed by the next one, or by the backup program right after it;
	 * one the kernel did not count adds nothing. */
	__u32 typed;
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct retrans);
} retrans SEC(".maps");

/* The established sockets, for the report walk: a walk of this table
 * visits them all, of every network namespace, at once, where iter/tcp
 * runs once per namespace and scans the host's whole socket hash in each
 * (the kernel's hash is shared by the namespaces, and the iterator shows
 * only its own namespace's sockets).
 *
 * A set-associative table in an array, like connecting: a slot is claimed
 * with a compare-and-swap when a socket reaches ESTABLISHED and given back
 * when it closes, no allocation, no lock (a hash map's update and delete,
 * or a socket-local storage created per connection, measured 0.7 and 1.3
 * us more per connection on a connection storm). A slot holds the
 * socket's address, which the walk reads through bpf_rdonly_cast: the
 * socket's cookie, read there, tells whether the address still names the
 * socket the slot was claimed for (TCP sockets are freed by RCU into a
 * cache of sockets, and a new socket gets a new cookie). A socket with no
 * free slot in its set is counted in TCPCONN_STAT_UNTRACKED, and the
 * loader walks the namespaces instead until a walk finds room for it.
 * A slot is 16 bytes, so that a set of eight is two cache lines: the
 * program's cost per connection grew with the table's size (a line
 * farther away), +0.6 us at 131,072 slots of 40 bytes, when the slot held
 * the types below too. */
struct tracked {
	__u64 cookie; /* the socket's cookie; 0 while the slot is free */
	__u64 sk;     /* the socket's address, + TRACKED_CLIENT */
};

/* TRACKED_CLIENT marks a slot's socket as the client end, in the low bit
 * of its address (a socket is aligned): the walk's records say so
 * (TCPCONN_F_CONNECTED) without reading the socket's bind bucket, one more
 * cold line for each socket. */
#define TRACKED_CLIENT 1ULL

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TCPCONN_TRACKED_SLOTS);
	__type(key, __u32);
	__type(value, struct tracked);
} tracked SEC(".maps");

/* A tracked socket's retransmits by type, for the walk, which cannot read
 * sk_storage through its untrusted socket pointer: the retransmit program
 * copies them here, at the socket's slot's index. Only sockets that
 * retransmit write here; an entry is the slot's socket's while it holds
 * that socket's cookie (a later socket in the slot finds another, and
 * reads no types). */
struct tracked_types {
	__u64 cookie;
	__u32 n[TCPCONN_RETRANS_TYPES];
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TCPCONN_TRACKED_SLOTS);
	__type(key, __u32);
	__type(value, struct tracked_types);
} tracked_types SEC(".maps");

/* The tracked table's shape, set by the loader like the handshake
 * table's. */
volatile const __u32 tracked_sets = TCPCONN_TRACKED_SLOTS / TCPCONN_TRACKED_WAYS;
volatile const __u32 tracked_ways = TCPCONN_TRACKED_WAYS;

/* set_of is the set of a set-associative table (of sets sets, a power of
 * two) that key picks: Fibonacci hashing, since both slab addresses and
 * cookies share or repeat their low bits. */
static __always_inline __u32 set_of(__u64 key, __u32 sets)
{
	return (__u32)((key * 0x9e3779b97f4a7c15ULL) >> 40) & (sets - 1);
}

/* tracked_index is the index of slot i of the set cookie picks; past the
 * set, past the table. */
static __always_inline __u32 tracked_index(__u64 cookie, __u32 i)
{
	if (i >= tracked_ways)
		return TCPCONN_TRACKED_NONE;
	return set_of(cookie, tracked_sets) * tracked_ways + i;
}

/* tracked_find is the index of the slot of the socket cookie names, or
 * TCPCONN_TRACKED_NONE. */
static __always_inline __u32 tracked_find(__u64 cookie)
{
	for (__u32 i = 0; i < TCPCONN_TRACKED_WAYS; i++) {
		__u32 k = tracked_index(cookie, i);
		struct tracked *t = bpf_map_lookup_elem(&tracked, &k);
		if (!t)
			break;
		if (t->cookie == cookie)
			return k;
	}
	return TCPCONN_TRACKED_NONE;
}

/* set_types copies a socket's retransmits by type beside its slot k. */
static __always_inline void set_types(__u32 k, __u64 cookie, const __u32 *n)
{
	struct tracked_types *ty = bpf_map_lookup_elem(&tracked_types, &k);
	if (!ty)
		return;
	__builtin_memcpy(ty->n, n, sizeof(ty->n));
	ty->cookie = cookie;
}

/* track claims a free slot for the socket, with its retransmits by type
 * so far (n, or none), and whether it is the client end. */
static __always_inline void track(struct sock *sk, __u64 cookie, const __u32 *n, bool client)
{
	for (__u32 i = 0; i < TCPCONN_TRACKED_WAYS; i++) {
		__u32 k = tracked_index(cookie, i);
		struct tracked *t = bpf_map_lookup_elem(&tracked, &k);
		if (!t)
			break;
		if (t->cookie != 0 || __sync_val_compare_and_swap(&t->cookie, 0, cookie) != 0)
			continue;
		/* The slot is this socket's; the walk ignores it until sk is
		 * set (it reads sk after cookie, and checks the cookie). */
		if (n && (n[0] | n[1] | n[2] | n[3] | n[4]))
			set_types(k, cookie, n);
		/* (The verifier takes no "|" on a pointer: sk is aligned, so
		 * adding the bit is the same.) */
		if (client)
			t->sk = (__u64)sk + TRACKED_CLIENT;
		else
			t->sk = (__u64)sk;
		return;
	}
	stat_inc(TCPCONN_STAT_UNTRACKED);
}

/* untrack gives the socket's slot back, at its close. */
static __always_inline void untrack(__u64 cookie)
{
	__u32 k = tracked_find(cookie);
	struct tracked *t = bpf_map_lookup_elem(&tracked, &k);
	if (t) {
		t->sk = 0;
		__sync_lock_test_and_set(&t->cookie, 0);
	}
}

/* bound_by_connect says whether connect() picked the socket's local port:
 * its bind bucket is of connect()'s own kind (fastreuse -1, set only by
 * inet_hash_connect). */
static __always_inline bool bound_by_connect(bool btf, struct tcp_sock *tp)
{
	struct inet_bind_bucket *tb = RD(btf, tp, inet_conn.icsk_bind_hash);
	return tb && RD(btf, tb, fastreuse) == -1;
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

/* fill writes one record of the socket's current counters into e. The
 * tracked walk passes the socket's cookie and retransmits by type (types,
 * or none), which its untrusted socket pointer cannot ask helpers for;
 * cookie is 0 elsewhere. */
static __always_inline void fill(bool btf, struct tcpconn_event *e, struct sock *sk, struct tcp_sock *tp,
				 __u8 kind, int oldstate, int newstate, __u16 family, __u64 now,
				 __u64 cookie, const __u32 *types)
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

	/* Start, direction and process: set by the caller where the probe
	 * knows them (open and failure records); user space carries them over
	 * to the connection's later records. */
	e->start_ns = 0;
	e->direction = TCPCONN_DIR_UNKNOWN;
	e->pid = 0;
	__builtin_memset(e->comm, 0, sizeof(e->comm));

	__builtin_memset(e->saddr, 0, sizeof(e->saddr));
	__builtin_memset(e->daddr, 0, sizeof(e->daddr));
	if (family == TCPCONN_AF_INET) {
		copy_addr(btf, e->saddr, &sk->__sk_common.skc_rcv_saddr, 4);
		copy_addr(btf, e->daddr, &sk->__sk_common.skc_daddr, 4);
	} else {
		copy_addr(btf, e->saddr, &sk->__sk_common.skc_v6_rcv_saddr, 16);
		copy_addr(btf, e->daddr, &sk->__sk_common.skc_v6_daddr, 16);
	}
	/* skc_num is 0 once the socket is unhashed at close: use inet_sport. */
	e->sport = bpf_ntohs(RD(btf, tp, inet_conn.icsk_inet.inet_sport));
	e->dport = bpf_ntohs(RD(btf, sk, __sk_common.skc_dport));
	e->conn_id = cookie ? cookie : conn_id(btf, sk, e);

	/* Payload sent is the sequence space the peer acknowledged
	 * (bytes_acked, which a segment dropped on the local egress and sent
	 * again does not inflate, unlike bytes_sent), less our FIN once it is
	 * acknowledged: it was queued in these states, and takes the last
	 * sequence number (write_seq counts it). An outbound socket's
	 * bytes_acked also counts its SYN, which the probe cannot tell from
	 * a close record: user space takes it out by the connection's
	 * direction (Record.SetDirection). A listener's child never counts
	 * its SYN-ACK. */
	__u64 acked = RD(btf, tp, bytes_acked);
	__u32 snd_una = RD(btf, tp, snd_una);
	/* Where the counted sequence space starts, on each side: the
	 * connection's two initial sequence numbers, which both ends know
	 * (user space names the connection with them). The FINs move both
	 * the counters and the sequence numbers, so these never change. */
	e->snd_base = snd_una - (__u32)acked;
	int st = newstate == TCP_CLOSE ? oldstate : newstate;
	/* FIN_WAIT2 is the state of an acknowledged FIN: no need to look. */
	if (acked > 0 && (st == TCP_FIN_WAIT2 ||
			  ((st == TCP_FIN_WAIT1 || st == TCP_CLOSING || st == TCP_LAST_ACK) &&
			   snd_una == RD(btf, tp, write_seq)))) {
		acked--;
		e->flags |= TCPCONN_F_FIN_ACKED;
	}
	/* bytes_received is the in-order sequence space delivered, and counts
	 * the peer's FIN too (never its SYN). */
	__u64 received = RD(btf, tp, bytes_received);
	e->rcv_base = RD(btf, tp, rcv_nxt) - (__u32)received;
	/* The socket's flags, read once: the FIN received (SOCK_DONE), and
	 * for a close, SO_LINGER 0 (reset_follows). */
	unsigned long skflags = 0;
	if (received > 0 || kind == TCPCONN_KIND_CLOSE)
		skflags = sock_flags(btf, sk);
	if (received > 0 && (skflags & (1UL << bpf_core_enum_value(enum sock_flags, SOCK_DONE)))) {
		received--;
		e->flags |= TCPCONN_F_FIN_RCVD;
	}
	/* Whether the local end reset the connection (see reset_follows and
	 * reset_was_sent). */
	if (kind == TCPCONN_KIND_CLOSE &&
	    ((e->sk_err == 0 && reset_follows(btf, sk, oldstate, skflags)) || reset_was_sent(btf, sk)))
		e->flags |= TCPCONN_F_RST_SENT;
	/* A report does not know the direction, which the SYN in bytes_acked
	 * and the ISNs need (user space has it from the open record, but not
	 * for a connection adopted at start). A local port that connect()
	 * picked is in a bind bucket of its own kind (fastreuse -1, set only
	 * by inet_hash_connect): that end is the client. (At close the bucket
	 * is already released.) A client that bind()s its port first, and
	 * every server, stay unknown here. The tracked walk has it from the
	 * slot instead (TRACKED_CLIENT). */
	if (kind == TCPCONN_KIND_UPDATE && !cookie && bound_by_connect(btf, tp))
		e->flags |= TCPCONN_F_CONNECTED;
	e->bytes_sent = acked;
	e->bytes_received = received;
	e->bytes_retrans = RD(btf, tp, bytes_retrans);
	e->total_retrans = RD(btf, tp, total_retrans);
	e->lost = RD(btf, tp, lost);
	e->segs_in = RD(btf, tp, segs_in);
	e->segs_out = RD(btf, tp, segs_out);
	e->srtt_us = RD(btf, tp, srtt_us) >> 3;
	e->rttvar_us = RD(btf, tp, mdev_us) >> 2;
	e->rtt_min_us = RD(btf, tp, rtt_min.s[0].v);
	__builtin_memset(e->retrans, 0, sizeof(e->retrans));
	if (cookie) {
		if (types)
			__builtin_memcpy(e->retrans, types, sizeof(e->retrans));
	} else if (btf && sk->sk_bpf_storage) {
		struct retrans *r = bpf_sk_storage_get(&retrans, sk, 0, 0);
		if (r)
			__builtin_memcpy(e->retrans, r->n, sizeof(e->retrans));
	}
}

/* reserve takes ring buffer space for one record, counting a drop when
 * there is none. */
static __always_inline struct tcpconn_event *reserve(void)
{
	struct tcpconn_event *e = bpf_ringbuf_reserve(&events, sizeof(struct tcpconn_event), 0);
	if (!e)
		stat_inc(TCPCONN_STAT_DROPPED);
	return e;
}

static __always_inline void submit(struct tcpconn_event *e)
{
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

/* handshake_key names a socket in the handshake table: its cookie, or in
 * raw_tp mode (no cookies there) its address. Never 0. (The verifier
 * allows no arithmetic on a BTF socket pointer, so tp_btf cannot hash the
 * address itself.) */
static __always_inline __u64 handshake_key(bool btf, struct sock *sk)
{
	if (btf)
		return bpf_get_socket_cookie(sk);
	return (__u64)sk;
}

/* handshake_slot is slot i of the set key picks (set_of), or NULL past
 * the set. */
static __always_inline struct handshake *handshake_slot(__u64 key, __u32 i)
{
	if (i >= handshake_ways)
		return NULL;
	__u32 slot = set_of(key, handshake_sets) * handshake_ways + i;
	return bpf_map_lookup_elem(&connecting, &slot);
}

/* handshake_remember claims a free slot of sk's set for what connect()
 * leaves; false if the set is full. */
static __always_inline bool handshake_remember(bool btf, struct sock *sk, __u64 now)
{
	__u64 key = handshake_key(btf, sk);
	for (__u32 i = 0; i < TCPCONN_HANDSHAKE_WAYS; i++) {
		struct handshake *h = handshake_slot(key, i);
		if (!h)
			break;
		if (h->sk != 0 || __sync_val_compare_and_swap(&h->sk, 0, key) != 0)
			continue;
		/* The slot is this socket's: nobody else writes it, and its
		 * own next state change comes after this program. */
		h->start_ns = now;
		h->pid = bpf_get_current_pid_tgid() >> 32;
		bpf_get_current_comm(h->comm, sizeof(h->comm));
		return true;
	}
	return false;
}

/* handshake_find is the slot holding the handshake of the socket key
 * names, or NULL. */
static __always_inline struct handshake *handshake_find(__u64 key)
{
	for (__u32 i = 0; i < TCPCONN_HANDSHAKE_WAYS; i++) {
		struct handshake *h = handshake_slot(key, i);
		if (!h)
			break;
		if (h->sk == key)
			return h;
	}
	return NULL;
}

/* handshake_free gives the slot back once what it held is read: the
 * exchange orders those reads before another connect can claim it. */
static __always_inline void handshake_free(struct handshake *h)
{
	__sync_lock_test_and_set(&h->sk, 0);
}

/* handshake_forget drops what connect() left for this socket. */
static __always_inline void handshake_forget(bool btf, struct sock *sk)
{
	struct handshake *h = handshake_find(handshake_key(btf, sk));
	if (h)
		handshake_free(h);
}

/* connected takes what connect() left for this socket into e, as an
 * outbound connection, and forgets it; false if nothing was left. e is
 * filled: in tp_btf its conn_id is the cookie, the socket's key. */
static __always_inline bool connected(bool btf, struct tcpconn_event *e, struct sock *sk)
{
	struct handshake *h = handshake_find(btf ? e->conn_id : handshake_key(false, sk));
	if (!h)
		return false;
	e->direction = TCPCONN_DIR_OUTBOUND;
	e->start_ns = h->start_ns;
	e->pid = h->pid;
	__builtin_memcpy(e->comm, h->comm, sizeof(e->comm));
	handshake_free(h);
	return true;
}

/* synacks_retransmitted keeps a listener's child's SYN-ACK retransmits
 * (its total_retrans at ESTABLISHED) for its later records. */
static __always_inline void synacks_retransmitted(struct sock *sk, struct tcpconn_event *e)
{
	struct retrans *r = bpf_sk_storage_get(&retrans, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!r)
		return;
	r->n[TCPCONN_RETRANS_SYNACK] = e->total_retrans;
	r->typed = e->total_retrans;
	e->retrans[TCPCONN_RETRANS_SYNACK] = e->total_retrans;
}

/* interesting is the cheap first test, on the tracepoint's arguments only:
 * of the ten or so state changes of a connection, three matter on the
 * client (SYN_SENT, ESTABLISHED, CLOSE) and two on the server
 * (ESTABLISHED, CLOSE). */
static __always_inline bool interesting(int oldstate, int newstate)
{
	switch (newstate) {
	case TCP_SYN_SENT:
	case TCP_ESTABLISHED:
		return oldstate != newstate;
	case TCP_CLOSE:
		/* not a listener closing */
		return oldstate != TCP_LISTEN && oldstate != TCP_CLOSE;
	}
	return false;
}

static __always_inline void handle(bool btf, struct sock *sk, struct tcp_sock *tp, int oldstate, int newstate)
{
	__u16 family = RD(btf, sk, __sk_common.skc_family);
	if (family != TCPCONN_AF_INET && family != TCPCONN_AF_INET6)
		return;
	/* A closing socket leaves the tracked table before its close record
	 * takes its time: a walk that still found it there read it earlier
	 * (see tcpconn_report_tracked), so its update is older than the
	 * close. */
	if (btf && newstate == TCP_CLOSE && oldstate != TCP_SYN_SENT && oldstate != TCP_SYN_RECV)
		untrack(bpf_get_socket_cookie(sk));
	__u64 now = bpf_ktime_get_boot_ns();

	if (newstate == TCP_SYN_SENT) {
		if (!handshake_remember(btf, sk, now))
			stat_inc(TCPCONN_STAT_NO_STATE);
		return;
	}

	__u8 kind = TCPCONN_KIND_CLOSE;
	if (newstate == TCP_ESTABLISHED)
		kind = TCPCONN_KIND_OPEN;
	else if (oldstate == TCP_SYN_SENT || oldstate == TCP_SYN_RECV)
		kind = TCPCONN_KIND_FAILURE;

	struct tcpconn_event *e = reserve();
	if (!e) {
		/* The record is lost, counted; the handshake's entry must go. */
		if (oldstate == TCP_SYN_SENT || oldstate == TCP_SYN_RECV)
			handshake_forget(btf, sk);
		/* The walk still reports the connection. */
		if (btf && kind == TCPCONN_KIND_OPEN)
			track(sk, bpf_get_socket_cookie(sk), NULL, oldstate == TCP_SYN_SENT || bound_by_connect(btf, tp));
		return;
	}
	fill(btf, e, sk, tp, kind, oldstate, newstate, family, now, 0, NULL);
	if (oldstate == TCP_SYN_SENT) {
		if (!connected(btf, e, sk)) {
			e->direction = TCPCONN_DIR_OUTBOUND;
			e->flags |= TCPCONN_F_ADOPTED;
		}
	} else if (oldstate == TCP_SYN_RECV) {
		/* A child socket, created from the listener at the handshake's
		 * last ACK, now; it has no struct socket until accept(). One that
		 * has is a connect()ing socket that met the peer's SYN in
		 * SYN_SENT (a simultaneous open, or a socket connecting to
		 * itself): its handshake entry is still there. (A fast-open
		 * child accepted before the last ACK has one too, and no entry.) */
		if (!RD(btf, sk, sk_socket) || !connected(btf, e, sk)) {
			e->direction = TCPCONN_DIR_INBOUND;
			if (kind == TCPCONN_KIND_OPEN) {
				e->start_ns = now;
				/* A child starts with its request's count of SYN-ACKs
				 * sent again (req->num_retrans) in total_retrans:
				 * nothing else was retransmitted yet. */
				if (btf && e->total_retrans)
					synacks_retransmitted(sk, e);
			}
		}
	} else if (kind == TCPCONN_KIND_OPEN) {
		e->flags |= TCPCONN_F_ADOPTED; /* not from a handshake we saw */
	}
	if (btf && kind == TCPCONN_KIND_OPEN)
		track(sk, e->conn_id, e->retrans, e->direction == TCPCONN_DIR_OUTBOUND);
	submit(e);
}

/* on_state_change takes one state change that interesting() let through. */
static __always_inline void on_state_change(bool btf, struct sock *sk, int oldstate, int newstate)
{
	if (btf) {
		if (sk->sk_protocol != IPPROTO_TCP)
			return;
		struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
		if (tp)
			handle(true, sk, tp, oldstate, newstate);
		return;
	}
	if (BPF_CORE_READ(sk, sk_protocol) == IPPROTO_TCP)
		handle(false, sk, (struct tcp_sock *)sk, oldstate, newstate);
}

/* The kernel does not run a tracing program on a CPU where it is already
 * running: a state change in a softirq that interrupts the probe would go
 * unseen, only counted in the program's recursion misses. So each mode has
 * a backup program, attached after the probe on the same tracepoint. The
 * probe pushes a note of each state change, before anything else, on a
 * small per-CPU stack; the backup, which runs next, pops it, or, when there
 * is none, takes the state change the kernel kept the probe from: counted
 * in TCPCONN_STAT_RESCUED, or TCPCONN_STAT_SKIPPED_NO_RECORD for the ones
 * interesting() drops. A stack, because interrupts nest: one that comes
 * between the two programs pushes and pops its own notes above the one the
 * backup will pop. (A flag set while the probe runs would miss the kernel's
 * own entry and exit around it; a mark cleared by the backup would be
 * cleared by an interrupt between the two programs, and the backup would
 * repeat a record: both were tried.)
 *
 * A softirq inside the backup, after its pop, leaves a note nobody pops
 * (the kernel skips the backup there). Such notes stay below later ones
 * until the stack wraps over them; they could only be taken for a later
 * state change of a socket at the same address, with the same ports and
 * the same two states, that the kernel also skipped the probe for. Notes
 * name the socket, its ports and both states for that reason. The stack
 * wraps rather than resets: top counts on, and a push overwrites the note
 * TCPCONN_NOTES below it, never one still waiting to be popped. */
struct notes {
	__u64 sk[TCPCONN_NOTES];
	__u32 ports[TCPCONN_NOTES];  /* skc_portpair */
	__u32 states[TCPCONN_NOTES]; /* oldstate << 16 | newstate */
	__u32 top;                   /* counts on; the slot is top % TCPCONN_NOTES */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct notes);
} seen SEC(".maps");

static __always_inline struct notes *notes(void)
{
	__u32 key = 0;
	return bpf_map_lookup_elem(&seen, &key);
}

#define barrier() asm volatile("" ::: "memory")

static __always_inline __u32 portpair(bool btf, struct sock *sk)
{
	return RD(btf, sk, __sk_common.skc_portpair);
}

/* probe is the probe program: it notes the state change, then takes it. */
static __always_inline void probe(bool btf, struct sock *sk, int oldstate, int newstate)
{
	struct notes *n = notes();
	if (n) {
		__u32 t = *(volatile __u32 *)&n->top;
		n->sk[t & (TCPCONN_NOTES - 1)] = (__u64)sk;
		n->ports[t & (TCPCONN_NOTES - 1)] = portpair(btf, sk);
		n->states[t & (TCPCONN_NOTES - 1)] = (__u32)oldstate << 16 | (__u32)newstate;
		barrier(); /* the note before top: an interrupt sees it whole or not at all */
		*(volatile __u32 *)&n->top = t + 1;
	}
	if (interesting(oldstate, newstate))
		on_state_change(btf, sk, oldstate, newstate);
}

/* backup pops the probe's note of this state change, with the notes above
 * it (left by interrupts inside this run before it read top), or takes the
 * state change. */
static __always_inline void backup(bool btf, struct sock *sk, int oldstate, int newstate)
{
	struct notes *n = notes();
	if (!n)
		return;
	__u32 states = (__u32)oldstate << 16 | (__u32)newstate;
	__u32 ports = portpair(btf, sk);
	__u32 t = *(volatile __u32 *)&n->top;
	for (__u32 i = 1; i <= TCPCONN_NOTES; i++) {
		if (i > t)
			break;
		__u32 k = (t - i) & (TCPCONN_NOTES - 1);
		if (n->states[k] == states && n->sk[k] == (__u64)sk && n->ports[k] == ports) {
			*(volatile __u32 *)&n->top = t - i;
			return;
		}
	}
	if (!interesting(oldstate, newstate)) {
		stat_inc(TCPCONN_STAT_SKIPPED_NO_RECORD);
		return;
	}
	stat_inc(TCPCONN_STAT_RESCUED);
	on_state_change(btf, sk, oldstate, newstate);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tcpconn_btf, struct sock *sk, int oldstate, int newstate)
{
	probe(true, sk, oldstate, newstate);
	return 0;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tcpconn_btf_backup, struct sock *sk, int oldstate, int newstate)
{
	backup(true, sk, oldstate, newstate);
	return 0;
}

SEC("raw_tp/inet_sock_set_state")
int BPF_PROG(tcpconn_raw, struct sock *sk, int oldstate, int newstate)
{
	probe(false, sk, oldstate, newstate);
	return 0;
}

SEC("raw_tp/inet_sock_set_state")
int BPF_PROG(tcpconn_raw_backup, struct sock *sk, int oldstate, int newstate)
{
	backup(false, sk, oldstate, newstate);
	return 0;
}

/* Connects refused for want of a listener, by local address (LRU: a
 * flood of refused addresses pushes out the oldest, never fails). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, TCPCONN_REFUSED_KEYS);
	__type(key, struct tcpconn_refused_key);
	__type(value, __u64);
} refused SEC(".maps");

/* count_refused counts a RST the kernel sends to a SYN that found no
 * socket: the server's side of a refused connect. skb is the SYN. */
static __always_inline void count_refused(const struct sk_buff *skb)
{
	unsigned char *head = skb->head;
	__u16 nh = skb->network_header, th = skb->transport_header;
	__u8 flags, ver;
	struct tcpconn_refused_key k = {};

	if (bpf_probe_read_kernel(&flags, 1, head + th + 13) || (flags & 0x12) != 0x02) /* SYN, not ACK */
		return;
	if (bpf_probe_read_kernel(&ver, 1, head + nh))
		return;
	ver >>= 4;
	if (ver == 4) {
		k.family = TCPCONN_AF_INET;
		if (bpf_probe_read_kernel(k.addr, 4, head + nh + 16)) /* daddr */
			return;
	} else if (ver == 6) {
		k.family = TCPCONN_AF_INET6;
		if (bpf_probe_read_kernel(k.addr, 16, head + nh + 24))
			return;
	} else {
		return;
	}
	struct net_device *dev = skb->dev;
	if (dev)
		k.netns_ino = BPF_CORE_READ(dev, nd_net.net, ns.inum);
	__u64 one = 1, *n = bpf_map_lookup_elem(&refused, &k);
	if (n) {
		__sync_fetch_and_add(n, 1);
	} else if (bpf_map_update_elem(&refused, &k, &one, BPF_NOEXIST)) {
		n = bpf_map_lookup_elem(&refused, &k); /* another CPU made it */
		if (n)
			__sync_fetch_and_add(n, 1);
	}
}

/* A reset the local end sends on a socket that is still open marks it for
 * its close record (see reset_sent). Resets sent at or after the close
 * (the usual aborts: reset_follows predicts them) and by time-wait and
 * request sockets are not marked; those to SYNs that found no socket are
 * counted in refused. */
SEC("tp_btf/tcp_send_reset")
int BPF_PROG(tcpconn_reset, const struct sock *sk, const struct sk_buff *skb, int reason)
{
	if (!sk) {
		if (skb)
			count_refused(skb);
		return 0;
	}
	int state = sk->__sk_common.skc_state;
	if (state == TCP_CLOSE || state == TCP_LISTEN || state == TCP_TIME_WAIT || state == TCP_NEW_SYN_RECV)
		return 0;
	/* The helper takes full sockets only, and returns NULL for others. */
	__u8 *v = bpf_sk_storage_get(&reset_sent, (struct sock *)sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (v)
		*v = 1;
	return 0;
}

/* A segment retransmitted, counted by type in the socket's retrans entry:
 * what its total_retrans grew by since the entry last counted (see
 * struct retrans), which is this retransmit's tcp_skb_pcount when nothing
 * was missed. A SYN in SYN_SENT is the client's SYN, another SYN a SYN-ACK
 * (a fast-open child, a simultaneous open); data is typed by the
 * congestion state the kernel retransmits it in: CA_Loss after a
 * retransmission timeout (the timer's retransmit and the rest of the
 * queue after it), CA_Recovery in fast recovery, otherwise a tail loss
 * probe (the only retransmit the kernel sends in Open, Disorder or CWR:
 * fast retransmits and RACK's reordering timeout enter Recovery first).
 *
 * counted says whether the kernel counted this one in total_retrans; it
 * matters only to a new entry, which counts this retransmit and none
 * before it (those of a connection open before the probe started). */
static __always_inline void count_retransmit(const struct sock *sk, const struct sk_buff *skb, bool counted)
{
	if (!sk || !skb)
		return;
	struct tcp_sock *tp = bpf_skc_to_tcp_sock((struct sock *)sk);
	if (!tp)
		return;
	struct {
		__u16 segs; /* tcp_gso_segs */
		__u16 size;
		__u16 flags; /* tcp_flags */
	} cb;
	if (bpf_probe_read_kernel(&cb, sizeof(cb), skb->cb + __builtin_offsetof(struct tcp_skb_cb, tcp_gso_segs)))
		return;
	__u32 total = tp->total_retrans;
	struct retrans *r = bpf_sk_storage_get(&retrans, (struct sock *)sk, 0, 0);
	if (!r) {
		if (!counted)
			return; /* nothing to type: the entry waits for one that is */
		r = bpf_sk_storage_get(&retrans, (struct sock *)sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (!r)
			return;
		__u32 segs = cb.segs ? cb.segs : 1;
		r->typed = total - (segs < total ? segs : total);
	}
	__u32 grew = total - r->typed;
	if ((__s32)grew <= 0)
		return; /* the backup after the probe, or one the kernel did not count */
	__u32 type;
	if (cb.flags & 0x02) /* SYN */
		type = sk->__sk_common.skc_state == TCP_SYN_SENT ? TCPCONN_RETRANS_SYN : TCPCONN_RETRANS_SYNACK;
	else if (tp->inet_conn.icsk_ca_state == TCP_CA_Loss)
		type = TCPCONN_RETRANS_TIMEOUT;
	else if (tp->inet_conn.icsk_ca_state == TCP_CA_Recovery)
		type = TCPCONN_RETRANS_FAST;
	else
		type = TCPCONN_RETRANS_TLP;
	if (type < TCPCONN_RETRANS_TYPES)
		r->n[type] += grew;
	r->typed = total;
	/* The walk's copy (a socket still in its handshake has no slot yet:
	 * track copies its types at ESTABLISHED). */
	__u64 cookie = bpf_get_socket_cookie((struct sock *)sk);
	__u32 k = tracked_find(cookie);
	if (k != TCPCONN_TRACKED_NONE)
		set_types(k, cookie, r->n);
}

/* retransmit_counted says whether a retransmit that ended with err was
 * counted in total_retrans. Kernels since 6.12 or so fire
 * tcp_retransmit_skb with the error, also where __tcp_retransmit_skb gave
 * up before counting it (skb still in the host's queue, no route, window
 * closed, no memory: these errors); a failure after the count (the local
 * stack could not send it: -ENOBUFS, -EPERM from netfilter) was counted.
 * (ip_queue_xmit's own -EHOSTUNREACH, after the count, is taken for the
 * early one: a route lost between the two checks; the next retransmit
 * types it.) */
static __always_inline bool retransmit_counted(int err)
{
	switch (err) {
	case -16: /* EBUSY */
	case -22: /* EINVAL */
	case -12: /* ENOMEM */
	case -113: /* EHOSTUNREACH */
	case -11: /* EAGAIN */
		return false;
	}
	return true;
}

/* The kernel does not run a tracing program on a CPU where it is already
 * running (see the state-change probe's backup): a retransmit in a
 * softirq that interrupts this program is skipped. The same program runs
 * again as a backup, attached after it, with a recursion guard of its
 * own: what the first counted, the second finds counted (struct retrans's
 * typed), and what the kernel kept the first from, the second types. */
SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(tcpconn_retransmit, const struct sock *sk, const struct sk_buff *skb, int err)
{
	count_retransmit(sk, skb, retransmit_counted(err));
	return 0;
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(tcpconn_retransmit_backup, const struct sock *sk, const struct sk_buff *skb, int err)
{
	count_retransmit(sk, skb, retransmit_counted(err));
	return 0;
}

/* Earlier kernels fire it for retransmits that went out only. The loader
 * picks these where the tracepoint has no error argument. */
SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(tcpconn_retransmit_sent, const struct sock *sk, const struct sk_buff *skb)
{
	count_retransmit(sk, skb, true);
	return 0;
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(tcpconn_retransmit_sent_backup, const struct sock *sk, const struct sk_buff *skb)
{
	count_retransmit(sk, skb, true);
	return 0;
}

/* reportable says whether a walk reports a socket in this state and
 * family: handshakes in progress are reported by their open or failure,
 * listeners are read through sock_diag. */
static __always_inline bool reportable(int state, __u16 family)
{
	if (state == TCP_SYN_SENT || state == TCP_SYN_RECV || state == TCP_CLOSE || state == TCP_LISTEN)
		return false;
	return family == TCPCONN_AF_INET || family == TCPCONN_AF_INET6;
}

/* At start, and when the tracked table was full, the loader runs this over
 * the TCP sockets of every network namespace: one update record per established connection, idle or
 * not, written to the iterator's seq_file rather than the ring buffer. The
 * iterator holds each socket's lock while the program reads it, so an
 * update and the close of the same connection cannot interleave: a socket
 * already closed is not visited, one closing later has its close record
 * read after the walk. (A walk of an sk_storage map instead is quadratic
 * on hosts with few CPUs: its hash has one bucket per CPU, and every read
 * of the seq_file restarts the bucket from its head.) */
SEC("iter/tcp")
int tcpconn_report(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct tcpconn_event e;

	if (!skc)
		return 0;
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(skc);
	if (!tp)
		return 0; /* request and time-wait sockets */
	struct sock *sk = &tp->inet_conn.icsk_inet.sk;
	int state = skc->skc_state;
	__u16 family = skc->skc_family;
	if (!reportable(state, family))
		return 0;
	fill(true, &e, sk, tp, TCPCONN_KIND_UPDATE, state, state, family, bpf_ktime_get_boot_ns(), 0, NULL);
	/* A connection open before the probe, or one the table had no room
	 * for then, is tracked from now on. */
	if (tracked_find(e.conn_id) == TCPCONN_TRACKED_NONE)
		track(sk, e.conn_id, e.retrans, e.flags & TCPCONN_F_CONNECTED);
	bpf_seq_write(ctx->meta->seq, &e, sizeof(e));
	return 0;
}

extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym __weak;
extern int bpf_iter_num_new(struct bpf_iter_num *it, int start, int end) __ksym __weak;
extern int *bpf_iter_num_next(struct bpf_iter_num *it) __ksym __weak;
extern void bpf_iter_num_destroy(struct bpf_iter_num *it) __ksym __weak;

/* The walk iterates over chunks of the tracked table, TCPCONN_TRACKED_CHUNK
 * slots each: an iterator's run per element costs about 0.1 us, which per
 * slot made the walk of an empty table 25 ms. A chunk's records always fit
 * the seq_file's buffer (32 KiB), where a chunk that overflows it would be
 * retried whole. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TCPCONN_TRACKED_SLOTS / TCPCONN_TRACKED_CHUNK);
	__type(key, __u32);
	__type(value, __u8);
} tracked_chunks SEC(".maps");

/* walk_out gathers a chunk's records, written to the seq_file at once: a
 * bpf_seq_write per record cost more than the copy itself. A run of the
 * iterator stays on its CPU (migration is disabled), and only the
 * loader's one walk at a time reads this iterator, so no other run can
 * take the CPU's buffer meanwhile. */
struct walk_out {
	__u32 n;
	__u32 pad;
	struct tcpconn_event e[TCPCONN_TRACKED_CHUNK];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct walk_out);
} walk_out SEC(".maps");

/* A chunk's records fit the iterator's seq_file buffer (8 pages), and a
 * per-CPU value (32 KiB). */
_Static_assert(sizeof(struct walk_out) <= 8 * 4096, "a chunk's records must fit the seq_file's buffer");

/* report_slot adds the update record of the socket in slot k, if any, to
 * out. The socket is not locked here, unlike iter/tcp's: its counters are read
 * as they are, and a close meanwhile is ordered by the slot. The close
 * gives the slot back before its record takes its time, so a socket whose
 * slot still holds its cookie after the reads was read before its close
 * record's time. A slot whose socket's cookie differs names a socket gone
 * without its close (a close the kernel kept both state-change programs
 * from): it is freed, counted. */
static __always_inline void report_slot(struct walk_out *out, __u32 k, __u64 now)
{
	struct tracked *t = bpf_map_lookup_elem(&tracked, &k);
	if (!t)
		return;
	__u32 n = out->n;
	if (n >= TCPCONN_TRACKED_CHUNK)
		return;
	struct tcpconn_event *e = &out->e[n];
	__u64 cookie = *(volatile __u64 *)&t->cookie;
	__u64 slot_sk = *(volatile __u64 *)&t->sk;
	__u64 addr = slot_sk & ~TRACKED_CLIENT;
	if (!cookie || !addr)
		return;
	struct sock *sk = bpf_rdonly_cast((void *)addr, bpf_core_type_id_kernel(struct sock));
	struct tcp_sock *tp = bpf_rdonly_cast((void *)addr, bpf_core_type_id_kernel(struct tcp_sock));
	if (sk->__sk_common.skc_cookie.counter != cookie) {
		if (*(volatile __u64 *)&t->cookie == cookie &&
		    __sync_val_compare_and_swap(&t->cookie, cookie, 0) == cookie)
			stat_inc(TCPCONN_STAT_STALE);
		return;
	}
	int state = sk->__sk_common.skc_state;
	__u16 family = sk->__sk_common.skc_family;
	if (!reportable(state, family))
		return;
	struct tracked_types *ty = bpf_map_lookup_elem(&tracked_types, &k);
	const __u32 *types = ty && ty->cookie == cookie ? ty->n : NULL;
	fill(true, e, sk, tp, TCPCONN_KIND_UPDATE, state, state, family, now, cookie, types);
	if (slot_sk & TRACKED_CLIENT)
		e->flags |= TCPCONN_F_CONNECTED;
	if (*(volatile __u64 *)&t->cookie != cookie)
		return; /* closed meanwhile: its close record has it */
	out->n = n + 1;
}

/* touch_slot reads one word of each cache line of the socket in slot k
 * that fill will read, and returns them folded together, never 0; 0 for a
 * free slot. The walk's cost was the first read of each line of a socket
 * nothing touched for a while (about half of it the socket's cookie): done one socket after
 * the other, each waits out its misses alone. A pass of touch_slot over a
 * chunk first asks for them all, independent loads the processor keeps
 * in flight together, so report_slot then finds them cached. (The
 * namespace is shared by many sockets.) */
static __always_inline __u64 touch_slot(__u32 k)
{
	struct tracked *t = bpf_map_lookup_elem(&tracked, &k);
	if (!t)
		return 0;
	__u64 addr = *(volatile __u64 *)&t->sk & ~TRACKED_CLIENT;
	if (!addr)
		return 0;
	struct sock *sk = bpf_rdonly_cast((void *)addr, bpf_core_type_id_kernel(struct sock));
	struct tcp_sock *tp = bpf_rdonly_cast((void *)addr, bpf_core_type_id_kernel(struct tcp_sock));
	/* One field of each line (Linux 6.18 x86-64's layout; elsewhere a
	 * line missed here is only read later, as before). */
	__u64 x = sk->__sk_common.skc_cookie.counter ^ sk->__sk_common.skc_dport ^ sk->sk_err;
	x ^= tp->inet_conn.icsk_inet.inet_sport ^ tp->lost ^ tp->write_seq ^ tp->snd_una;
	x ^= tp->bytes_received ^ tp->bytes_acked ^ tp->total_retrans;
	barrier_var(x); /* the loads are wanted for their side effect */
	return x | 1;
}

/* The walk visits a chunk's slots in groups of TRACKED_GROUP, a group's
 * slots in straight-line code: a free slot then costs a load, where a
 * turn of an open-coded iterator each made the scan of a mostly free
 * table the walk's main cost on a quiet node (about 16 ns a slot, 4 ms a
 * walk of 131,072 slots). */
#define TRACKED_GROUP 8
#define TRACKED_GROUPS (TCPCONN_TRACKED_CHUNK / TRACKED_GROUP)
_Static_assert(TRACKED_GROUPS * TRACKED_GROUP == TCPCONN_TRACKED_CHUNK && TRACKED_GROUPS <= 16,
	       "a chunk is at most 16 whole groups (their occupancy bits fit 128 bits)");

/* touch_group touches the group of slots from k (touch_slot) and returns
 * which of them are occupied, a bit each. */
static __always_inline __u32 touch_group(__u32 k)
{
	__u32 occ = 0;
#pragma unroll
	for (__u32 j = 0; j < TRACKED_GROUP; j++)
		if (touch_slot(k + j))
			occ |= 1U << j;
	return occ;
}

/* Every report_interval the loader runs this over the tracked table's
 * chunks: one update record per established connection, idle or not, of
 * every network namespace, written to the iterator's seq_file (an array's
 * iterator resumes each read at its index). Loaded where the kernel has
 * bpf_rdonly_cast and open-coded iterators (6.4). */
SEC("iter/bpf_map_elem")
int tcpconn_report_tracked(struct bpf_iter__bpf_map_elem *ctx)
{
	__u32 *key = ctx->key;
	if (!key)
		return 0;
	struct seq_file *seq = ctx->meta->seq;
	__u32 first = *key * TCPCONN_TRACKED_CHUNK;
	__u32 zero = 0;
	struct walk_out *out = bpf_map_lookup_elem(&walk_out, &zero);
	if (!out)
		return 0;
	struct bpf_iter_num it, slots;
	int *i, *j;
	/* Each group's occupancy, 8 bits a group: groups 0-7 in lo, 8-15 in hi. */
	__u64 lo = 0, hi = 0;
	bpf_iter_num_new(&it, 0, TRACKED_GROUPS);
	while ((i = bpf_iter_num_next(&it))) {
		__u32 g = *i;
		if (g >= TRACKED_GROUPS)
			break;
		__u64 occ = touch_group(first + g * TRACKED_GROUP);
		if (g < 8)
			lo |= occ << (g * 8);
		else
			hi |= occ << ((g - 8) * 8);
	}
	bpf_iter_num_destroy(&it);
	if (!lo && !hi)
		return 0; /* a free chunk: most of them on a quiet node */
	__u64 now = bpf_ktime_get_boot_ns();
	out->n = 0;
	bpf_iter_num_new(&it, 0, TRACKED_GROUPS);
	while ((i = bpf_iter_num_next(&it))) {
		__u32 g = *i;
		if (g >= TRACKED_GROUPS)
			break;
		__u32 occ = (g < 8 ? lo >> (g * 8) : hi >> ((g - 8) * 8)) & 0xff;
		if (!occ)
			continue;
		bpf_iter_num_new(&slots, 0, TRACKED_GROUP);
		while ((j = bpf_iter_num_next(&slots)))
			if (occ & (1U << (*j & 31)))
				report_slot(out, first + g * TRACKED_GROUP + *j, now);
		bpf_iter_num_destroy(&slots);
	}
	bpf_iter_num_destroy(&it);
	__u32 n = out->n;
	if (n > TCPCONN_TRACKED_CHUNK)
		n = TCPCONN_TRACKED_CHUNK;
	if (n)
		bpf_seq_write(seq, out->e, n * sizeof(struct tcpconn_event));
	return 0;
}
