package config

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// Enabled reports whether TLS is on.
func (t TLSConfig) Enabled() bool { return t.Mode == TLSRequired || t.Mode == TLSSkipVerify }

// ClientTLS builds the tls.Config for a client of section ("source",
// "redis", "nats"); nil (and no error) when TLS is disabled. Verification is
// on unless the operator explicitly chose skip-verify (callers log that
// loudly). defaultServerName is used when tls_server_name is empty (pass the
// host you dial; some clients, e.g. go-mysql, do not fill it in themselves).
// Errors name the section's key.
func (t TLSConfig) ClientTLS(section, defaultServerName string) (*tls.Config, error) {
	if !t.Enabled() {
		return nil, nil
	}
	tc := &tls.Config{
		MinVersion: tls.VersionTLS12,
		ServerName: t.ServerName,
		// skip-verify is documented as insecure: an explicit opt-in.
		InsecureSkipVerify: t.Mode == TLSSkipVerify, //nolint:gosec // explicit, documented opt-in
	}
	if tc.ServerName == "" {
		tc.ServerName = defaultServerName
	}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("%s.tls_ca_file: %v", section, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s.tls_ca_file %s: no PEM certificates found", section, t.CAFile)
		}
		tc.RootCAs = pool
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("%s.tls_cert_file/tls_key_file: %v", section, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}
