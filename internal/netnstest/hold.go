package netnstest

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
// namespaces, in child processes of this test binary that run the test
// named child (whose body is HolderChild). They are closed in Cleanup.
func HoldInChildren(tb testing.TB, p *Pair, conns int, child string) {
	tb.Helper()
	for i := 0; i*perHolder < conns; i++ {
		n := min(perHolder, conns-i*perHolder)
		cmd := exec.Command(os.Args[0], "-test.run=^"+child+"$")
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

// HolderChild is the body of the child test HoldInChildren runs; it skips
// when the test binary was not started as a holder. It prints "ready" once
// its connections are open and holds them until its standard input closes.
func HolderChild(t *testing.T) {
	spec := os.Getenv(holdEnv)
	if spec == "" {
		t.Skip("only runs as a connection holder child")
	}
	f := strings.Split(spec, ",")
	server, err := Attach(f[0])
	if err != nil {
		t.Fatal(err)
	}
	client, err := Attach(f[1])
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(f[3])
	closeAll, err := Hold(server, client, f[2], n)
	if err != nil {
		t.Fatal(err)
	}
	defer closeAll()
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
}
