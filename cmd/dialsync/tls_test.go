package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"dialsync/internal/dev/proc"
	"dialsync/internal/dev/testenv"
	"dialsync/notice"
)

// TLS end to end: dialsync talks to a TLS-only MariaDB account, a TLS-only
// NATS and a TLS-only Redis with tls_mode = "required" and a private CA,
// and refuses to start when the CA does not match. PostgreSQL TLS goes
// through the libpq DSN (sslmode=verify-full, sslrootcert), not tls_* keys:
// see pgtls_test.go.

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string // PEM certificate
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

var serial int64 = 1

func newTestCA(t testing.TB, dir, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, name+".pem")
	writePEM(t, file, "CERTIFICATE", der)
	return &testCA{cert: cert, key: key, file: file}
}

// leaf issues a server certificate for 127.0.0.1 and localhost; it returns
// the certificate and key files.
func (ca *testCA) leaf(t testing.TB, dir, name string) (certFile, keyFile string) {
	t.Helper()
	return ca.leafFor(t, dir, name, []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")})
}

// leafFor issues a server certificate for the given names and addresses.
func (ca *testCA) leafFor(t testing.TB, dir, name string, dnsNames []string, ips []net.IP) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     dnsNames,
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "EC PRIVATE KEY", kder)
	return certFile, keyFile
}

// startTLSNATS runs a private nats-server with JetStream that only speaks
// TLS; it returns the tls:// URL.
func startTLSNATS(t testing.TB, certFile, keyFile string) string {
	t.Helper()
	port := freeTCPPort(t)
	srv, err := proc.Start("/usr/sbin/nats-server", proc.Options{Args: []string{"-a", "127.0.0.1", "-p", strconv.Itoa(port),
		"-js", "-sd", t.TempDir(), "--tls", "--tlscert", certFile, "--tlskey", keyFile}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Kill)
	out := srv.Logs()
	addr := "127.0.0.1:" + strconv.Itoa(port)
	waitFor(t, 10*time.Second, "nats-server "+addr, func() bool {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil && strings.Contains(out.String(), "Server is ready")
	})
	return "tls://" + addr
}

// runUntilExit starts dialsync expecting it to refuse to start; it returns
// the exit code and the last line of its output.
func runUntilExit(t *testing.T, p *pipe) (int, string) {
	t.Helper()
	before := len(p.allLogs())
	p.start()
	waitFor(t, 45*time.Second, "dialsync to exit", p.exited)
	code := p.stop()
	out := strings.TrimSpace(p.allLogs()[before:])
	return code, out[strings.LastIndexByte(out, '\n')+1:]
}

func TestTLSEndToEnd(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir, "dialsync-test-ca")
	wrongCA := newTestCA(t, dir, "unrelated-ca")
	certFile, keyFile := ca.leaf(t, dir, "server")

	my := testenv.StartMariaDB(t, testenv.MariaDBOptions{Args: []string{
		"--ssl-ca=" + ca.file, "--ssl-cert=" + certFile, "--ssl-key=" + keyFile,
	}})
	if v := my.QueryString(t, "SELECT @@have_ssl"); v != "YES" {
		t.Fatalf("MariaDB TLS not enabled: have_ssl = %q", v)
	}
	natsURL := startTLSNATS(t, certFile, keyFile)
	rs := startRedis(t, "--port", "0", "--tls-port", "{port}", "--tls-cert-file", certFile,
		"--tls-key-file", keyFile, "--tls-ca-cert-file", ca.file, "--tls-auth-clients", "no")

	p := newPipe(t, pipeOpt{my: my})
	// An account that can only log in over TLS (as deploy/mysql/grants.sql
	// recommends): a plaintext connection from dialsync would be refused, so
	// streaming proves both the lookup pool and the binlog connection use TLS.
	secret := randomSecret(t)
	my.Exec(t,
		"CREATE USER 'ds_tls'@'%' IDENTIFIED BY '"+secret+"' REQUIRE SSL",
		"GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'ds_tls'@'%'",
		"GRANT SELECT ON `"+p.name+"`.* TO 'ds_tls'@'%'",
	)
	env := map[string]string{
		"DIALSYNC_SOURCE_USER":        "ds_tls",
		"DIALSYNC_SOURCE_PASSWORD":    secret,
		"DIALSYNC_SOURCE_TLS_MODE":    "required",
		"DIALSYNC_SOURCE_TLS_CA_FILE": ca.file,
		"DIALSYNC_REDIS_ADDR":         rs.addr(),
		"DIALSYNC_REDIS_TLS_MODE":     "required",
		"DIALSYNC_REDIS_TLS_CA_FILE":  ca.file,
		"DIALSYNC_NATS_URL":           natsURL,
		"DIALSYNC_NATS_TLS_MODE":      "required",
		"DIALSYNC_NATS_TLS_CA_FILE":   ca.file,
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	base := enableHTTP(t)

	// The harness's own NATS client is plaintext on the machine server; read
	// this pipeline's notices from the TLS server with a verifying client.
	nc, err := nats.Connect(natsURL, nats.RootCAs(ca.file), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatalf("test client over TLS: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}

	p.start()
	body := waitReadyz(t, p, base, 30*time.Second, 200, `"binlog":{"ok":true`, `"redis":{"ok":true`, `"nats":{"ok":true`)
	t.Logf("ready over TLS: %s", body)
	if !strings.Contains(p.allLogs(), `"tls":true`) {
		t.Errorf("dialsync did not log a TLS connection")
	}
	p.exec("UPDATE users SET status = 'inactive' WHERE id = 5")
	p.waitCaughtUp(30 * time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, p.stream)
	if err != nil {
		t.Fatalf("stream %s on the TLS server: %v", p.stream, err)
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{p.subjects + ".>"}})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for !found {
		m, err := c.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatalf("no user.changed notice for user 5 over TLS: %v", err)
		}
		ev, err := notice.Decode(m.Data())
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type != notice.TypeUserChanged {
			continue
		}
		uc, err := ev.UserChanged()
		if err != nil {
			t.Fatal(err)
		}
		found = uc.UserID == 5
	}
	if code := p.stop(); code != 0 {
		t.Fatalf("clean stop: exit code %d", code)
	}

	// A CA that did not sign the server's certificate: dialsync must refuse
	// with a one-line error naming the section and the certificate problem.
	for _, section := range []string{"source", "redis", "nats"} {
		key := "DIALSYNC_" + strings.ToUpper(section) + "_TLS_CA_FILE"
		t.Run("wrong CA for "+section, func(t *testing.T) {
			t.Setenv(key, wrongCA.file)
			code, last := runUntilExit(t, p)
			t.Logf("exit %d: %s", code, last)
			if code == 0 {
				t.Errorf("exit code 0 with a wrong %s CA", section)
			}
			if !strings.Contains(last, section) || !strings.Contains(strings.ToLower(last), "certificate") {
				t.Errorf("last line should name %s and the certificate problem: %q", section, last)
			}
		})
	}
}
