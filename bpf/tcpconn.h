/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The record the probe hands to user space. It is defined once, here, and
 * bpf2go generates the Go type from it (bpfTcpconnEvent): change it only
 * together with the decoder in record.go.
 */
#ifndef TCPCONN_H
#define TCPCONN_H

/* Event kinds. */
#define TCPCONN_KIND_OPEN 1    /* handshake completed (-> ESTABLISHED) */
#define TCPCONN_KIND_CLOSE 2   /* an established connection ended (-> CLOSE) */
#define TCPCONN_KIND_FAILURE 3 /* a handshake never completed (SYN_SENT/SYN_RECV -> CLOSE) */
#define TCPCONN_KIND_UPDATE 4  /* periodic report of a live connection */

/* Direction, seen from the local end. */
#define TCPCONN_DIR_UNKNOWN 0
#define TCPCONN_DIR_OUTBOUND 1 /* local end called connect() */
#define TCPCONN_DIR_INBOUND 2  /* local end accepted from a listener */

/* Flags. */
#define TCPCONN_F_ADOPTED 1  /* first seen after its handshake: start time unknown */
#define TCPCONN_F_FIN_RCVD 2 /* the peer's FIN arrived (and was taken off bytes_received) */

/* Per-CPU counters in the stats map. */
#define TCPCONN_STAT_EMITTED 0      /* records committed to the ring buffer */
#define TCPCONN_STAT_DROPPED 1      /* records lost: ring buffer full */
#define TCPCONN_STAT_NO_STATE 2     /* an outbound handshake could not be remembered: table full */
#define TCPCONN_STAT_RESCUED 3      /* state changes the probe was kept from, taken by its backup */
#define TCPCONN_STAT_SKIPPED_NO_RECORD 4 /* the same, that interesting() drops */
#define TCPCONN_STAT_MAX 5

struct tcpconn_event {
	__u64 ts_ns;          /* CLOCK_BOOTTIME of the event */
	__u64 start_ns;       /* CLOCK_BOOTTIME of SYN_SENT / SYN_RECV; 0 if unknown */
	__u64 conn_id;        /* unique per connection, joins its open/update/close */
	__u64 bytes_sent;     /* payload sent, retransmissions not counted twice */
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
	__u8 saddr[16];    /* local address: 4 bytes for AF_INET, 16 for AF_INET6 */
	__u8 daddr[16];    /* peer address */
	__u16 sport;       /* local port, host order */
	__u16 dport;       /* peer port, host order */
	__u16 family;      /* AF_INET or AF_INET6 */
	__u8 kind;
	__u8 direction;
	__u8 old_state;
	__u8 new_state;
	__u8 flags;
	__u8 pad;
	char comm[16];     /* command of the connecting process (outbound only) */
};

#endif
