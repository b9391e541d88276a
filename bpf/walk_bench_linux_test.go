package bpf

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpconn/tcpconn/internal/netnstest"
)

// BenchmarkWalk measures one report walk with 10k and 100k open
// connections (both ends tracked: 20k and 200k sockets), in wall time and
// CPU time of this process (the walk and the kernel's iterator run in it).
// `make bench-walk`.
func BenchmarkWalk(b *testing.B) {
	for _, conns := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("conns=%d", conns), func(b *testing.B) { benchWalk(b, conns) })
	}
}

func benchWalk(b *testing.B, conns int) {
	netnstest.RequireRoot(b)
	pair := netnstest.NewPair(b, 206)
	pair.Client.Exec(b, "sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=1024 65535")
	pair.Server.Exec(b, "sysctl", "-q", "-w", "net.core.somaxconn=65535")
	p, err := Load(Options{Mode: AttachTPBTF, RingBufferBytes: 64 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	go func() { // keep the ring buffer drained
		var rec Record
		for p.Read(&rec) != ErrStopped {
		}
	}()

	// Each holder process keeps its share of connections open, both ends:
	// a process may hold only so many file descriptors.
	const perHolder = 9000
	var holders []*exec.Cmd
	start := time.Now()
	for i := 0; i*perHolder < conns; i++ {
		n := min(perHolder, conns-i*perHolder)
		cmd := exec.Command(os.Args[0], "-test.run=^TestWalkHolderChild$")
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%s,%s,%d", holdEnv, pair.Server.Name, pair.Client.Name,
			net.JoinHostPort(pair.ServerIP.String(), strconv.Itoa(7200+i)), n))
		stdin, err := cmd.StdinPipe()
		if err != nil {
			b.Fatal(err)
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		line, err := bufio.NewReader(out).ReadString('\n')
		if err != nil || line != "ready\n" {
			b.Fatalf("holder %d: %q %v", i, line, err)
		}
		holders = append(holders, cmd)
		defer func() { stdin.Close(); _ = cmd.Wait() }()
	}
	b.Logf("opened %d connections in %d processes in %v", conns, len(holders), time.Since(start))

	var walked int
	b.ResetTimer()
	cpu0 := cpuTime()
	for b.Loop() {
		walked, err = p.Walk(func(*Record) {})
		if err != nil {
			b.Fatal(err)
		}
	}
	cpu := cpuTime() - cpu0
	b.StopTimer()
	if walked < 2*conns {
		b.Fatalf("walk saw %d sockets, want at least %d", walked, 2*conns)
	}
	b.ReportMetric(float64(walked), "sockets")
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/walk")
}

const holdEnv = "TCPCONN_HOLD"

// TestWalkHolderChild holds connections open for BenchmarkWalk; it does
// nothing unless started by it. It prints "ready" once all are open and
// holds them until its standard input closes.
func TestWalkHolderChild(t *testing.T) {
	spec := os.Getenv(holdEnv)
	if spec == "" {
		t.Skip("only runs as BenchmarkWalk's child")
	}
	f := strings.Split(spec, ",")
	server, err := netnstest.Attach(f[0])
	if err != nil {
		t.Fatal(err)
	}
	client, err := netnstest.Attach(f[1])
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(f[3])
	l, err := server.Listen(f[2])
	if err != nil {
		t.Fatal(err)
	}
	var keep []net.Conn
	var mu sync.Mutex
	var accepted sync.WaitGroup
	accepted.Add(n)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			keep = append(keep, c)
			mu.Unlock()
			accepted.Done()
		}
	}()
	err = client.Do(func() error {
		for range n {
			c, err := net.Dial("tcp", f[2])
			if err != nil {
				return err
			}
			mu.Lock()
			keep = append(keep, c)
			mu.Unlock()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	accepted.Wait()
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	for _, c := range keep {
		c.Close()
	}
}

// cpuTime is this process's user + system CPU time.
func cpuTime() time.Duration {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
