// Command imagebuild writes the otelcol-tcpconn OCI image as a tarball
// without a container engine: one layer holding the static collector and
// its default configuration on an empty base. `make image` runs it; load
// the result with `docker load`, `podman load`, `ctr images import` or push
// it with crane.
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func main() {
	bin := flag.String("binary", "bin/otelcol-tcpconn", "static collector binary")
	conf := flag.String("config", "config/otelcol-tcpconn.yaml", "default configuration")
	tag := flag.String("tag", "otelcol-tcpconn:0.1.0", "image reference")
	out := flag.String("out", "dist/otelcol-tcpconn-image.tar", "output tarball")
	flag.Parse()
	if err := build(*bin, *conf, *tag, *out); err != nil {
		log.Fatal(err)
	}
}

func build(bin, conf, tag, out string) error {
	ref, err := name.NewTag(tag)
	if err != nil {
		return fmt.Errorf("tag %q: %w", tag, err)
	}
	layerTar, err := layer(map[string]string{
		"otelcol-tcpconn":                 bin,
		"etc/otelcol-tcpconn/config.yaml": conf,
	})
	if err != nil {
		return err
	}
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layerTar)), nil })
	if err != nil {
		return fmt.Errorf("layer: %w", err)
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		return fmt.Errorf("append layer: %w", err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cfg = cfg.DeepCopy()
	cfg.Architecture, cfg.OS = "amd64", "linux"
	cfg.Config = v1.Config{
		Entrypoint: []string{"/otelcol-tcpconn"},
		Cmd:        []string{"--config=/etc/otelcol-tcpconn/config.yaml"},
		Labels: map[string]string{
			"org.opencontainers.image.title":       "otelcol-tcpconn",
			"org.opencontainers.image.description": "OpenTelemetry Collector with the tcpconn eBPF receiver",
		},
	}
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	return tarball.WriteToFile(out, ref, img)
}

// layer packs files (image path -> local path) into a tar, executable.
func layer(files map[string]string) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, dir := range []string{"etc/", "etc/otelcol-tcpconn/"} {
		if err := tw.WriteHeader(&tar.Header{Name: dir, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: time.Unix(0, 0)}); err != nil {
			return nil, err
		}
	}
	for _, path := range []string{"otelcol-tcpconn", "etc/otelcol-tcpconn/config.yaml"} {
		b, err := os.ReadFile(files[path])
		if err != nil {
			return nil, err
		}
		mode := int64(0o644)
		if path == "otelcol-tcpconn" {
			mode = 0o755
		}
		if err := tw.WriteHeader(&tar.Header{Name: path, Mode: mode, Size: int64(len(b)), ModTime: time.Unix(0, 0)}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(b); err != nil {
			return nil, err
		}
	}
	return buf.Bytes(), tw.Close()
}
