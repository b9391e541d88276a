package kube

import (
	"errors"
	"fmt"
	"time"
)

// AuthType says how the resolver authenticates to the API server, with the
// same values as the contrib Kubernetes components.
type AuthType string

// Auth types.
const (
	AuthNone           AuthType = "none"
	AuthServiceAccount AuthType = "serviceAccount"
	AuthKubeConfig     AuthType = "kubeConfig"
)

// Config is the `kubernetes` block of the receiver's configuration.
type Config struct {
	// Enabled turns on identity resolution through the API server.
	Enabled bool `mapstructure:"enabled"`
	// AuthType is serviceAccount (in a pod), kubeConfig (KUBECONFIG or
	// ~/.kube/config) or none (no credentials, and the API server's
	// certificate unverified: needs InsecureSkipTLSVerify).
	AuthType AuthType `mapstructure:"auth_type"`
	// InsecureSkipTLSVerify accepts whatever certificate the API server
	// presents. Required, and only allowed, with auth_type none, which has
	// no CA to verify it with: that choice must be written in the config.
	InsecureSkipTLSVerify bool `mapstructure:"insecure_skip_tls_verify"`
	// Context selects a kubeconfig context; empty is the current one.
	Context string `mapstructure:"context"`
	// NodeName is this node's name, from the downward API (spec.nodeName).
	NodeName string `mapstructure:"node_name"`
	// TrustDomain is the SPIFFE trust domain of principals.
	TrustDomain string `mapstructure:"trust_domain"`
	// ClusterName is reported as the cluster of both ends.
	ClusterName string `mapstructure:"cluster_name"`
	// ClusterDomain is the DNS suffix of service names (name.ns.svc.<domain>).
	ClusterDomain string `mapstructure:"cluster_domain"`
	// PodGracePeriod is how long a deleted pod is remembered, so that
	// connections it made are still attributed to it after its IP is reused.
	PodGracePeriod time.Duration `mapstructure:"pod_grace_period"`
	// LocalByNetNS resolves the local end of a connection by its socket's
	// network namespace (the pod whose processes run in it, from /proc),
	// and by its address only when the namespace is not known.
	LocalByNetNS bool `mapstructure:"local_by_netns"`
}

// DefaultConfig returns the defaults: off, service account auth, Istio's
// default trust domain and cluster name.
func DefaultConfig() Config {
	return Config{
		AuthType:       AuthServiceAccount,
		TrustDomain:    "cluster.local",
		ClusterName:    "Kubernetes",
		ClusterDomain:  "cluster.local",
		PodGracePeriod: 5 * time.Minute,
		LocalByNetNS:   true,
	}
}

// Validate reports every invalid field under the given YAML prefix.
func (c *Config) Validate(prefix string) error {
	var errs []error
	switch c.AuthType {
	case AuthNone, AuthServiceAccount, AuthKubeConfig:
	default:
		errs = append(errs, fmt.Errorf("%sauth_type: must be serviceAccount, kubeConfig or none, got %q", prefix, c.AuthType))
	}
	switch {
	case c.AuthType == AuthNone && !c.InsecureSkipTLSVerify:
		errs = append(errs, fmt.Errorf("%sauth_type: none does not verify the API server's certificate: set %sinsecure_skip_tls_verify: true to accept that, or use serviceAccount or kubeConfig", prefix, prefix))
	case c.AuthType != AuthNone && c.InsecureSkipTLSVerify:
		errs = append(errs, fmt.Errorf("%sinsecure_skip_tls_verify: only with auth_type none (serviceAccount and kubeConfig verify with their CA), got auth_type %s", prefix, c.AuthType))
	}
	if c.TrustDomain == "" {
		errs = append(errs, fmt.Errorf("%strust_domain: must not be empty", prefix))
	}
	if c.ClusterName == "" {
		errs = append(errs, fmt.Errorf("%scluster_name: must not be empty", prefix))
	}
	if c.ClusterDomain == "" {
		errs = append(errs, fmt.Errorf("%scluster_domain: must not be empty", prefix))
	}
	if c.PodGracePeriod < 0 {
		errs = append(errs, fmt.Errorf("%spod_grace_period: must not be negative, got %v", prefix, c.PodGracePeriod))
	}
	return errors.Join(errs...)
}
