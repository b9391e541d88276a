package bpf

//go:generate go tool -modfile=../tools/go.mod bpf2go -cc clang-19 -strip llvm-strip-19 -cflags "-O2 -g -Wall -Werror" -target bpfel -type tcpconn_event tcpconn tcpconn.bpf.c -- -I.
