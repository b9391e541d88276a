package kubenode

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/tcpconn/tcpconn/internal/kubetest"
)

// AppImage runs testapp (serve, client); PauseImage is the same binary as
// every pod's sandbox.
const AppImage = "tcpconn.test/app:1"

// BuildTestImages compiles testapp static and writes the app and pause
// images into one tarball in dir, for Options.Images.
func BuildTestImages(dir string) (string, error) {
	bin := filepath.Join(dir, "testapp")
	_, self, _, _ := runtime.Caller(0)
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "./testapp")
	cmd.Dir = filepath.Dir(self)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build testapp: %w: %s", err, out)
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		return "", err
	}
	layer, err := binaryLayer("app", b)
	if err != nil {
		return "", err
	}
	images := map[name.Reference]v1.Image{}
	for ref, entry := range map[string][]string{AppImage: {"/app"}, PauseImage: {"/app", "pause"}} {
		tag, err := name.NewTag(ref)
		if err != nil {
			return "", err
		}
		if images[tag], err = image(layer, entry); err != nil {
			return "", err
		}
	}
	out := filepath.Join(dir, "test-images.tar")
	return out, tarball.MultiRefWriteToFile(out, images)
}

func binaryLayer(path string, b []byte) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: path, Mode: 0o755, Size: int64(len(b)), ModTime: time.Unix(0, 0)}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(b); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
}

func image(layer v1.Layer, entrypoint []string) (v1.Image, error) {
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.Architecture, cfg.OS = "amd64", "linux"
	cfg.Config = v1.Config{Entrypoint: entrypoint}
	return mutate.ConfigFile(img, cfg)
}

// UpWithTestImages builds the test workloads' images into dir, then brings
// a node up in dir/node with kube-proxy in mode and those images plus
// images imported, within three minutes: what the tests and nodectl share.
func UpWithTestImages(dir, mode string, images ...string) (*Node, error) {
	test, err := BuildTestImages(dir)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	return Up(ctx, Options{Dir: filepath.Join(dir, "node"), BinDir: kubetest.BinDir(), ProxyMode: mode, Images: append([]string{test}, images...)})
}
