// Command testapp is every test workload on the test node, built static and
// packed into an image by kubenode: a pod sandbox (pause), a server and a
// client that exchange exact byte counts, so tests know what the agent must
// report.
//
//	testapp pause
//	testapp serve -port 8080 -request 1000 -response 5000 -health 8081
//	testapp client -target 10.211.0.10:80 -conns 10 -request 1000 -response 5000 [-delay 3s] [-hold] [-stay]
//
// With -hold the client keeps its connections open after the first
// exchange until it gets SIGUSR1, then exchanges once more and closes: a
// test restarts the agent in between. With -stay it sleeps when done (a
// Deployment's pod), else it exits 0 (a Job's).
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		log.Fatal("usage: testapp pause|serve|client [flags]")
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	port := fs.Int("port", 8080, "serve: port")
	health := fs.Int("health", 0, "serve: HTTP health port for kubelet probes (0: none)")
	request := fs.Int("request", 1000, "bytes the client sends per exchange")
	response := fs.Int("response", 1000, "bytes the server answers per exchange")
	target := fs.String("target", "", "client: host:port")
	conns := fs.Int("conns", 1, "client: connections")
	hold := fs.Bool("hold", false, "client: keep connections open until SIGUSR1, then exchange again")
	stay := fs.Bool("stay", false, "client: sleep when done instead of exiting")
	delay := fs.Duration("delay", 0, "client: wait this long before the first connection")
	_ = fs.Parse(os.Args[2:])
	var err error
	switch os.Args[1] {
	case "pause":
		waitSignal(syscall.SIGTERM, syscall.SIGINT)
	case "serve":
		err = serve(*port, *health, *request, *response)
	case "client":
		time.Sleep(*delay)
		err = client(*target, *conns, *request, *response, *hold)
		if err == nil && *stay {
			waitSignal(syscall.SIGTERM, syscall.SIGINT)
		}
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		log.Fatal(err)
	}
}

func waitSignal(sigs ...os.Signal) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, sigs...)
	<-ch
}

func serve(port, health, request, response int) error {
	if health > 0 {
		go func() {
			log.Print(http.ListenAndServe(":"+strconv.Itoa(health), http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				_, _ = io.WriteString(w, "ok\n")
			})))
		}()
	}
	l, err := net.Listen("tcp", ":"+strconv.Itoa(port))
	if err != nil {
		return err
	}
	log.Printf("serving on %d: %d bytes in, %d out per exchange", port, request, response)
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		go answer(c, request, response)
	}
}

// answer serves exchanges until the client closes.
func answer(c net.Conn, request, response int) {
	defer c.Close()
	in, out := make([]byte, request), make([]byte, response)
	for {
		if _, err := io.ReadFull(c, in); err != nil {
			return
		}
		if _, err := c.Write(out); err != nil {
			return
		}
	}
}

func client(target string, conns, request, response int, hold bool) error {
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	open := make([]net.Conn, 0, conns)
	for i := 0; i < conns; i++ {
		c, err := dialRetry(target)
		if err != nil {
			return err
		}
		if err := exchange(c, request, response); err != nil {
			return fmt.Errorf("connection %d: %w", i, err)
		}
		if !hold {
			if err := c.Close(); err != nil {
				return err
			}
			continue
		}
		open = append(open, c)
	}
	if hold {
		log.Printf("holding %d connections until SIGUSR1", len(open))
		<-usr1
		for i, c := range open {
			if err := exchange(c, request, response); err != nil {
				return fmt.Errorf("connection %d after hold: %w", i, err)
			}
			if err := c.Close(); err != nil {
				return err
			}
		}
	}
	log.Printf("done: %d connections to %s", conns, target)
	return nil
}

// dialRetry waits for the Service to answer: kube-proxy programs it a
// moment after the pod starts.
func dialRetry(target string) (net.Conn, error) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", target, 5*time.Second)
		if err == nil || time.Now().After(deadline) {
			return c, err
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func exchange(c net.Conn, request, response int) error {
	if _, err := c.Write(make([]byte, request)); err != nil {
		return err
	}
	_, err := io.ReadFull(c, make([]byte, response))
	return err
}
