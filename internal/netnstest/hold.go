package netnstest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Hold opens n connections from client to a listener of its own on target
// in server, keeps both ends open, and returns a function that closes them
// all. Benchmarks use it in child processes to hold many connections open
// (a process may hold only so many file descriptors).
func Hold(server, client *NS, target string, n int) (func(), error) {
	l, err := server.Listen(target)
	if err != nil {
		return nil, err
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
			c, err := net.Dial("tcp", target)
			if err != nil {
				return err
			}
			mu.Lock()
			keep = append(keep, c)
			mu.Unlock()
		}
		return nil
	})
	closeAll := func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range keep {
			c.Close()
		}
	}
	if err != nil {
		closeAll()
		return nil, err
	}
	accepted.Wait()
	return closeAll, nil
}

// holdEnv carries a holder child's job: server ns, client ns, target, count.
const holdEnv = "NETNSTEST_HOLD"

// perHolder is how many connections one child holds: both ends are its
// file descriptors, and a process may hold only so many.
const perHolder = 9000

// HoldInChildren holds conns connections open between the pair's
// namespaces, in child processes of this test binary. The binary's TestMain
// must call ChildMain first. They are closed in Cleanup. It widens the
// client's port range and the server's accept backlog for them.
func HoldInChildren(tb testing.TB, p *Pair, conns int) {
	tb.Helper()
	p.Client.Exec(tb, "sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=1024 65535")
	p.Server.Exec(tb, "sysctl", "-q", "-w", "net.core.somaxconn=65535")
	for i := 0; i*perHolder < conns; i++ {
		n := min(perHolder, conns-i*perHolder)
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%s,%s,%d", holdEnv, p.Server.Name, p.Client.Name,
			net.JoinHostPort(p.ServerIP.String(), strconv.Itoa(7200+i)), n))
		stdin, err := cmd.StdinPipe()
		if err != nil {
			tb.Fatal(err)
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			tb.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			tb.Fatal(err)
		}
		line, err := bufio.NewReader(out).ReadString('\n')
		if err != nil || line != "ready\n" {
			tb.Fatalf("holder %d: %q %v", i, line, err)
		}
		tb.Cleanup(func() { stdin.Close(); _ = cmd.Wait() })
	}
}

// ChildMain runs this test binary as a connection holder when
// HoldInChildren started it, and then exits; otherwise it returns at once.
// Call it first in TestMain.
func ChildMain() {
	spec := os.Getenv(holdEnv)
	if spec == "" {
		return
	}
	if err := hold(spec); err != nil {
		fmt.Fprintln(os.Stderr, "holder:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// hold opens the connections spec names, prints "ready" and holds them
// until standard input closes.
func hold(spec string) error {
	f := strings.Split(spec, ",")
	if len(f) != 4 {
		return fmt.Errorf("bad holder spec %q", spec)
	}
	server, err := Attach(f[0])
	if err != nil {
		return err
	}
	defer server.Close()
	client, err := Attach(f[1])
	if err != nil {
		return err
	}
	defer client.Close()
	n, err := strconv.Atoi(f[3])
	if err != nil {
		return fmt.Errorf("bad holder count %q: %w", f[3], err)
	}
	closeAll, err := Hold(server, client, f[2], n)
	if err != nil {
		return err
	}
	defer closeAll()
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	return nil
}

// heavyLock is the name, in the abstract socket namespace (of the host's
// network namespace), that Heavy binds: it goes with its process, and
// leaves nothing behind.
const heavyLock = "@tcpconn-heavy-kernel-test"

// Heavy makes the tests that load the host the most (100,000 connections
// and more) take turns across test processes: go test ./... runs every
// package's tests at once, and two of them together overflowed the
// probes' ring buffers, theirs and those of the tests beside them. It
// waits for the other's end, and holds the turn until the test's.
func Heavy(tb testing.TB) {
	tb.Helper()
	waited := time.Now()
	for {
		l, err := net.Listen("unix", heavyLock)
		if err == nil {
			if d := time.Since(waited); d > time.Second {
				tb.Logf("waited %v for another heavy test", d.Round(time.Second))
			}
			tb.Cleanup(func() { l.Close() })
			return
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			tb.Fatalf("take the heavy tests' turn: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
