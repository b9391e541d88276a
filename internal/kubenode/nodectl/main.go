// Command nodectl brings the test node up or down by hand (make node-up,
// make node-down), for trying the agent as a user would:
//
//	nodectl up   -dir /run/tcpconn-node [-proxy iptables|nftables] [-image dist/otelcol-tcpconn-image.tar]
//	nodectl down -dir /run/tcpconn-node
//
// The node keeps running after up returns; its admin kubeconfig is
// <dir>/kubeconfig and its parts' logs are in <dir>/logs.
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/tcpconn/tcpconn/internal/kubenode"
)

func main() {
	if len(os.Args) < 2 {
		log.Fatal("usage: nodectl up|down [-dir DIR] [-proxy MODE] [-image TAR]...")
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	dir := fs.String("dir", "/run/tcpconn-node", "the node's files and state")
	proxy := fs.String("proxy", "iptables", "kube-proxy mode: iptables or nftables")
	var images imageList
	fs.Var(&images, "image", "an image tarball to import (repeatable)")
	_ = fs.Parse(os.Args[2:])
	switch os.Args[1] {
	case "up":
		if err := up(*dir, *proxy, images); err != nil {
			log.Fatal(err)
		}
	case "down":
		if err := kubenode.Down(*dir); err != nil {
			log.Fatal(err)
		}
		if err := os.RemoveAll(*dir); err != nil {
			log.Fatal(err)
		}
		fmt.Println("node down, host restored")
	default:
		log.Fatalf("unknown command %q", os.Args[1])
	}
}

func up(dir, proxy string, images []string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return err
	}
	start := time.Now()
	n, err := kubenode.UpWithTestImages(abs, proxy, images...)
	if err != nil {
		return err
	}
	// down reads the state where up wrote it.
	if err := os.Symlink(filepath.Join(n.Dir, "state.json"), filepath.Join(abs, "state.json")); err != nil {
		return err
	}
	fmt.Printf("node %s Ready in %v (kube-proxy %s)\n  export KUBECONFIG=%s\n  logs: %s\n", kubenode.NodeName,
		time.Since(start).Round(time.Millisecond), proxy, n.Kubeconfig(), filepath.Join(n.Dir, "logs"))
	return nil
}

type imageList []string

func (l *imageList) String() string     { return fmt.Sprint(*l) }
func (l *imageList) Set(v string) error { *l = append(*l, v); return nil }
