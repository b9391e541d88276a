/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The record the probe hands to user space and the constants both sides
 * share. They are defined once, here, and bpf2go generates the Go type
 * (tcpconnTcpconnEvent) and constants from them: change the record only
 * together with the decoder in record.go.
 */
#ifndef TCPCONN_H
#define TCPCONN_H

/*
 * The constants the probe and user space share, as enums rather than
 * macros so that they reach the object's BTF (through struct
 * tcpconn_shared) and bpf2go generates their Go constants (-type in
 * gen.go): the Go side defines its own from those, never by hand.
 */

/* Event kinds. */
enum tcpconn_kind {
	TCPCONN_KIND_OPEN = 1,    /* handshake completed (-> ESTABLISHED) */
	TCPCONN_KIND_CLOSE = 2,   /* an established connection ended (-> CLOSE) */
	TCPCONN_KIND_FAILURE = 3, /* a handshake never completed (SYN_SENT/SYN_RECV -> CLOSE) */
	TCPCONN_KIND_UPDATE = 4,  /* periodic report of a live connection */
};

/* Direction, seen from the local end. */
enum tcpconn_direction {
	TCPCONN_DIR_UNKNOWN = 0,
	TCPCONN_DIR_OUTBOUND = 1, /* local end called connect() */
	TCPCONN_DIR_INBOUND = 2,  /* local end accepted from a listener */
};

/* Flags. */
enum tcpconn_flag {
	TCPCONN_F_ADOPTED = 1,  /* first seen after its handshake: start time unknown */
	TCPCONN_F_FIN_RCVD = 2, /* the peer's FIN arrived (and was taken off bytes_received) */
	TCPCONN_F_FIN_ACKED = 4, /* our FIN was acknowledged (and was taken off bytes_sent) */
	TCPCONN_F_RST_SENT = 8,  /* close records: the local end reset the connection */
	TCPCONN_F_CONNECTED = 16, /* update records: the local port was picked by connect(): the client */
};

/* Retransmits by type: the index of the record's retrans[] and of the
 * probe's per-socket counters (tp_btf/tcp_retransmit_skb; SYN-ACKs from
 * the request socket's count, which a listener's child inherits). */
enum tcpconn_retrans_type {
	TCPCONN_RETRANS_SYN = 0,       /* the client's SYN */
	TCPCONN_RETRANS_SYNACK = 1,    /* the server's SYN-ACK */
	TCPCONN_RETRANS_TIMEOUT = 2,   /* data, after a retransmission timeout (CA_Loss) */
	TCPCONN_RETRANS_FAST = 3,      /* data, in fast recovery (CA_Recovery: dupacks, SACK, RACK) */
	TCPCONN_RETRANS_TLP = 4,       /* data, a tail loss probe (any other state) */
	TCPCONN_RETRANS_TYPES = 5,
};

/* Address families of the record (the kernel's AF_*, which vmlinux.h
 * lacks: they are macros). */
enum tcpconn_family {
	TCPCONN_AF_INET = 2,
	TCPCONN_AF_INET6 = 10,
};

/* Per-CPU counters in the stats map: the keys, and their count. */
enum tcpconn_stat {
	TCPCONN_STAT_EMITTED = 0,         /* records committed to the ring buffer */
	TCPCONN_STAT_DROPPED = 1,         /* records lost: ring buffer full */
	TCPCONN_STAT_NO_STATE = 2,        /* an outbound handshake could not be remembered: table full */
	TCPCONN_STAT_RESCUED = 3,         /* state changes the probe was kept from, taken by its backup */
	TCPCONN_STAT_SKIPPED_NO_RECORD = 4, /* the same, that interesting() drops */
	TCPCONN_STAT_UNTRACKED = 5,       /* established sockets the tracked table had no slot for */
	TCPCONN_STAT_STALE = 6,           /* tracked slots the walk found naming a socket gone */
	TCPCONN_STAT_MAX = 7,
};

/* The shape of the probe's tables (see tcpconn.bpf.c). */
enum tcpconn_geometry {
	TCPCONN_HANDSHAKE_WAYS = 4,      /* slots per set of the handshake table */
	TCPCONN_HANDSHAKE_SLOTS = 65536, /* its default size, a power of two */
	TCPCONN_NOTES = 8,               /* the per-CPU note stack, a power of two */
	TCPCONN_REFUSED_KEYS = 4096,     /* local addresses whose refused connects are counted */
	TCPCONN_TRACKED_WAYS = 8,        /* slots per set of the tracked table */
	TCPCONN_TRACKED_SLOTS = 131072,  /* its default size, a power of two */
	TCPCONN_TRACKED_NONE = 0xffffffff, /* no slot of the tracked table */
	TCPCONN_TRACKED_CHUNK = 128,     /* slots the walk's program reads per run: their records fit the iterator's buffer */
};

struct tcpconn_event {
	__u64 ts_ns;          /* CLOCK_BOOTTIME of the event */
	__u64 start_ns;       /* CLOCK_BOOTTIME of SYN_SENT / SYN_RECV; 0 if unknown */
	__u64 conn_id;        /* unique per connection, joins its open/update/close */
	__u64 bytes_sent;     /* sequence space the peer acknowledged, less our FIN: the
			       * payload, plus the SYN of an outbound socket */
	__u64 bytes_received; /* payload received, the peer's FIN not counted */
	__u64 bytes_retrans;  /* payload bytes retransmitted */
	__u64 total_retrans;  /* segments retransmitted */
	__u64 lost;           /* segments lost (cumulative, incl. retransmits) */
	__u64 segs_in;
	__u64 segs_out;
	__u32 srtt_us;     /* smoothed RTT, microseconds (kernel value >> 3) */
	__u32 rtt_min_us;  /* minimum RTT seen, microseconds */
	__u32 rttvar_us;   /* RTT mean deviation, microseconds (kernel value >> 2) */
	__u32 netns_ino;   /* network namespace inode of the socket */
	__u32 pid;         /* tgid of the connecting process (outbound only) */
	__s32 sk_err;      /* errno on failure/reset, 0 otherwise */
	__u32 snd_base;    /* snd_una - bytes_acked: the local ISN, + 1 for a listener's child */
	__u32 rcv_base;    /* rcv_nxt - bytes_received: the peer's ISN + 1 */
	__u32 retrans[TCPCONN_RETRANS_TYPES]; /* segments retransmitted, by enum tcpconn_retrans_type (tp_btf) */
	__u8 saddr[16];    /* local address: 4 bytes for AF_INET, 16 for AF_INET6 */
	__u8 daddr[16];    /* peer address */
	__u16 sport;       /* local port, host order */
	__u16 dport;       /* peer port, host order */
	__u16 family;      /* enum tcpconn_family */
	__u8 kind;         /* enum tcpconn_kind */
	__u8 direction;    /* enum tcpconn_direction */
	__u8 old_state;    /* TCP_* */
	__u8 new_state;
	__u8 flags;        /* enum tcpconn_flag bits */
	__u8 pad;
	char comm[16];     /* command of the connecting process (outbound only) */
};

/* A local address that answered connects with a RST for want of a
 * listener (the server's side of a refused connect), in its network
 * namespace: the key of the refused map, whose value counts them. */
struct tcpconn_refused_key {
	__u32 netns_ino;
	__u16 family; /* enum tcpconn_family */
	__u16 pad;
	__u8 addr[16]; /* 4 bytes for AF_INET */
};

/* Refers to every shared type, so that they all reach the object's BTF
 * (an enum nothing refers to is left out): the probe declares one unused
 * pointer to it. */
struct tcpconn_shared {
	struct tcpconn_event event;
	struct tcpconn_refused_key refused_key;
	enum tcpconn_kind kind;
	enum tcpconn_direction direction;
	enum tcpconn_flag flag;
	enum tcpconn_family family;
	enum tcpconn_stat stat;
	enum tcpconn_geometry geometry;
	enum tcpconn_retrans_type retrans_type;
};

#endif
