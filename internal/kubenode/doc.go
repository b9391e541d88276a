// Package kubenode runs a real single-node Kubernetes on this machine for
// tests and for trying the agent by hand (make node-up): etcd,
// kube-apiserver, kube-controller-manager, kube-scheduler, containerd with
// the CNI bridge, kubelet and kube-proxy (iptables or nftables mode), all
// built from Go modules (make node-bin) or installed from Debian.
//
// Everything it creates lives under one directory and one set of addresses
// of its own (Addresses), and Down removes it and restores what the node's
// parts change on the host (sysctls, netfilter tables, cgroups, mounts,
// network namespaces), so a machine that ran the tests is left as it was.
// Processes are started detached with their pids in the directory, so a node
// brought up by one command (tcpconn-node up) is taken down by another.
//
// It knows nothing of the receiver: tests deploy the agent from deploy/
// with kubectl, as users do.
package kubenode
