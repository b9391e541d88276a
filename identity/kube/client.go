package kube

import (
	"fmt"
	"os"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// NewClient builds a clientset for the configured auth type.
func NewClient(cfg Config) (kubernetes.Interface, error) {
	rc, err := restConfig(cfg)
	if err != nil {
		return nil, err
	}
	rc.UserAgent = "otelcol-tcpconn"
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return cs, nil
}

func restConfig(cfg Config) (*rest.Config, error) {
	switch cfg.AuthType {
	case AuthServiceAccount:
		rc, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("kubernetes auth_type serviceAccount: %w", err)
		}
		return rc, nil
	case AuthKubeConfig:
		rules := clientcmd.NewDefaultClientConfigLoadingRules()
		overrides := &clientcmd.ConfigOverrides{CurrentContext: cfg.Context}
		rc, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides).ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("kubernetes auth_type kubeConfig: %w", err)
		}
		return rc, nil
	case AuthNone:
		if !cfg.InsecureSkipTLSVerify {
			return nil, fmt.Errorf("kubernetes auth_type none: needs insecure_skip_tls_verify: true (the API server's certificate is not verified)")
		}
		host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
		if host == "" || port == "" {
			return nil, fmt.Errorf("kubernetes auth_type none: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be set")
		}
		return &rest.Config{Host: "https://" + host + ":" + port, TLSClientConfig: rest.TLSClientConfig{Insecure: true}}, nil
	}
	return nil, fmt.Errorf("kubernetes auth_type %q is not supported", cfg.AuthType)
}
