package bpf

// The probe's Go side is generated next to this file: tcpconn_bpfel.go (the
// typed objects, the names of maps, programs and variables, the record's
// type and the shared constants of tcpconn.h) and tcpconn_bpfel.o. Run
// `go generate ./bpf/` (needs clang-19) after changing tcpconn.bpf.c or
// tcpconn.h.
//go:generate go tool -modfile=../tools/go.mod bpf2go -cc clang-19 -strip llvm-strip-19 -cflags "-O2 -g -Wall -Werror" -target bpfel -type tcpconn_event -type tcpconn_kind -type tcpconn_direction -type tcpconn_flag -type tcpconn_family -type tcpconn_stat -type tcpconn_geometry -type tcpconn_refused_key -type tcpconn_retrans_type tcpconn tcpconn.bpf.c -- -I.
