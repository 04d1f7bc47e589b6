package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// Enabled reports whether TLS is on.
func (t TLSConfig) Enabled() bool { return t.Mode == TLSRequired || t.Mode == TLSSkipVerify }

// ClientTLS builds the tls.Config for a client; nil (and no error) when TLS is
// disabled. defaultServerName is used when tls_server_name is empty (pass the
// host you dial; some clients, e.g. go-mysql, do not fill it in themselves).
func (t TLSConfig) ClientTLS(defaultServerName string) (*tls.Config, error) {
	if !t.Enabled() {
		return nil, nil
	}
	tc := &tls.Config{
		MinVersion: tls.VersionTLS12,
		ServerName: t.ServerName,
		// skip-verify is documented as insecure; callers should log a
		// warning when they see it.
		InsecureSkipVerify: t.Mode == TLSSkipVerify, //nolint:gosec // explicit, documented opt-in
	}
	if tc.ServerName == "" {
		tc.ServerName = defaultServerName
	}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls: read CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls: CA file %q holds no PEM certificate", t.CAFile)
		}
		tc.RootCAs = pool
	}
	if t.CertFile != "" || t.KeyFile != "" {
		if t.CertFile == "" || t.KeyFile == "" {
			return nil, errors.New("tls: client certificate and key must be set together")
		}
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls: load client certificate %q: %w", t.CertFile, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}
