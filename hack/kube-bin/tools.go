//go:build tools

// Package kubebin pins the commands `make kube-bin` and `make node-bin` build:
// the API server and etcd for the identity tests, and the node's parts
// (controller-manager, scheduler, kubelet, kube-proxy) for the node tests.
package kubebin

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
