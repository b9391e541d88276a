package bpf

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpconn/tcpconn/internal/netnstest"
)

const (
	stormClients = 4
	stormConns   = 1000 // per client per round
	stormEnv     = "TCPCONN_STORM"
)

// stormResult is what one storm child reports about itself.
type stormResult struct {
	Conns  int
	WallNs int64
	CPUNs  int64
}

// BenchmarkOverhead measures what the probe costs a connect/close storm run
// by a separate process between two network namespaces, as a workload on a
// node would be. Rounds alternate without and with the probe; the probe's
// records are read and decoded in this process, whose CPU is reported
// apart. It prints medians and ratios from one run. `make overhead`.
func BenchmarkOverhead(b *testing.B) {
	const rounds = 6
	netnstest.RequireRoot(b)
	pair := netnstest.NewPair(b, 204)
	// Client-closed connections leave TIME_WAIT behind: reuse those ports.
	pair.Client.Exec(b, "sysctl", "-q", "-w", "net.ipv4.tcp_tw_reuse=1")

	var rate, work, reader [2][]float64
	records := 0
	for round := range rounds {
		for mode := range 2 {
			var p *Probe
			var err error
			done := make(chan int, 1)
			var readCPU time.Duration
			if mode == 1 {
				if p, err = Load(benchOptions()); err != nil {
					b.Fatal(err)
				}
				go func() {
					runtime.LockOSThread()
					defer runtime.UnlockOSThread()
					t0 := threadCPU()
					var rec Record
					n := 0
					for {
						err := p.Read(&rec)
						if errors.Is(err, ErrStopped) {
							readCPU = threadCPU() - t0
							done <- n
							return
						}
						if err == nil {
							n++
						}
					}
				}()
			}
			res := runStorm(b, pair, 9000+round*2+mode)
			if p != nil {
				_ = p.Stop()
				records += <-done
				_ = p.Close()
			}
			n := float64(res.Conns)
			rate[mode] = append(rate[mode], n/time.Duration(res.WallNs).Seconds())
			work[mode] = append(work[mode], float64(res.CPUNs)/1e3/n)
			reader[mode] = append(reader[mode], float64(readCPU.Nanoseconds())/1e3/n)
		}
	}
	med := func(v []float64) float64 {
		s := slices.Clone(v)
		slices.Sort(s)
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	b.ReportMetric(med(rate[0]), "conn/s-baseline")
	b.ReportMetric(med(rate[1]), "conn/s-probe")
	b.ReportMetric(med(work[0]), "workload-cpu-us/conn-baseline")
	b.ReportMetric(med(work[1]), "workload-cpu-us/conn-probe")
	b.ReportMetric(med(reader[1]), "reader-cpu-us/conn")
	b.ReportMetric((med(work[1])+med(reader[1]))/med(work[0]), "total-cpu-ratio")
	b.Logf("records read: %d for %d connections (4 per connection: open and close on both ends)",
		records, rounds*stormClients*stormConns)
}

// runStorm runs one storm in a child process (this test binary) and
// returns what the child measured of itself.
func runStorm(b *testing.B, pair *netnstest.Pair, port int) stormResult {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestStormChild$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%s,%s:%d", stormEnv, pair.Server.Name, pair.Client.Name, pair.ServerIP, port))
	out, err := cmd.Output()
	if err != nil {
		b.Fatalf("storm child: %v: %s", err, out)
	}
	line := out[:max(0, strings.IndexByte(string(out), '\n'))]
	var res stormResult
	if err := json.Unmarshal(line, &res); err != nil {
		b.Fatalf("storm child output %q: %v", out, err)
	}
	return res
}

// TestStormChild is the storm's process; it does nothing unless started by
// BenchmarkOverhead. It prints its result as the first line of output.
func TestStormChild(t *testing.T) {
	spec := os.Getenv(stormEnv)
	if spec == "" {
		t.Skip("only runs as BenchmarkOverhead's child")
	}
	parts := strings.Split(spec, ",")
	server, err := netnstest.Attach(parts[0])
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	client, err := netnstest.Attach(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	target := parts[2]
	l, err := server.Listen(target)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var served sync.WaitGroup
	served.Add(stormClients * stormConns)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(io.Discard, c); c.Close(); served.Done() }()
		}
	}()

	before := cpuTime()
	start := time.Now()
	var wg sync.WaitGroup
	for range stormClients {
		wg.Go(func() {
			err := client.Do(func() error {
				for range stormConns {
					c, err := net.Dial("tcp", target)
					if err != nil {
						return err
					}
					c.Close()
				}
				return nil
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	served.Wait()
	res := stormResult{Conns: stormClients * stormConns, WallNs: time.Since(start).Nanoseconds(), CPUNs: (cpuTime() - before).Nanoseconds()}
	out, _ := json.Marshal(res)
	fmt.Println(string(out))
}

// benchOptions lets a run vary the probe's settings from the environment:
// TCPCONN_BENCH_MODE (attach mode), TCPCONN_BENCH_WAKEUP (bytes),
// TCPCONN_BENCH_POLL (duration), TCPCONN_BENCH_RING (bytes).
func benchOptions() Options {
	o := Options{Mode: AttachMode(os.Getenv("TCPCONN_BENCH_MODE"))}
	if v, err := strconv.ParseUint(os.Getenv("TCPCONN_BENCH_WAKEUP"), 10, 64); err == nil {
		o.WakeupBytes = v
	}
	if v, err := time.ParseDuration(os.Getenv("TCPCONN_BENCH_POLL")); err == nil {
		o.PollInterval = v
	}
	if v, err := strconv.ParseUint(os.Getenv("TCPCONN_BENCH_RING"), 10, 32); err == nil {
		o.RingBufferBytes = uint32(v)
	}
	return o
}

// threadCPU is the calling OS thread's CPU time.
func threadCPU() time.Duration {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_THREAD, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuTime is this process's user + system CPU time.
func cpuTime() time.Duration {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
