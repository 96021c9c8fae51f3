package main_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/exoarmur/exoarmur/internal/api/client"
	"github.com/exoarmur/exoarmur/internal/contract"
)

type certKey struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	der  []byte
}

func newCert(t *testing.T, cn string, parent *certKey, isCA, server bool) *certKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: isCA,
	}
	if server {
		tpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	} else if !isCA {
		tpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	signer, signerKey := tpl, key
	if parent != nil {
		signer, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &certKey{cert, key, der}
}

func (c *certKey) writePEM(t *testing.T, dir, name string) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.der}), 0o600)
	kb, _ := x509.MarshalECPrivateKey(c.key)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	return certFile, keyFile
}

func (c *certKey) tlsCert() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{c.der}, PrivateKey: c.key}
}

// TestMutualTLS: with --tls-cert/--client-ca, plain HTTP is refused, a
// client without a certificate or with one from another CA is refused, and
// a valid certificate maps to the principal registered for its CN.
func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca := newCert(t, "exoarmur test CA", nil, true, false)
	otherCA := newCert(t, "someone else's CA", nil, true, false)
	srvCert := newCert(t, "127.0.0.1", ca, false, true)
	alice := newCert(t, "alice", ca, false, false)
	mallory := newCert(t, "alice", otherCA, false, false) // same CN, wrong CA
	caFile, _ := ca.writePEM(t, dir, "ca")
	certFile, keyFile := srvCert.writePEM(t, dir, "server")

	dataDir := t.TempDir()
	id := strings.TrimSpace(run(t, "keys", "create", "--data-dir", dataDir, "--cert-cn", "alice", "--name", "alice", "--role", "operator", "--tenant", "acme", "--actions", "*"))
	if !strings.HasPrefix(id, "cert_") {
		t.Fatalf("keys create --cert-cn printed %q", id)
	}
	addr := freePort(t)
	startTLS(t, dataDir, addr, certFile, keyFile, caFile)

	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	tlsClient := func(certs ...tls.Certificate) *http.Client {
		return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: certs}}}
	}
	url := "https://" + addr + "/v1/tenants/acme/killswitch"

	// Plain HTTP is refused.
	// Raw: the point is the TLS listener's answer to a client that speaks no TLS, not an API call.
	if resp, err := http.Get("http://" + addr + "/v1/tenants/acme/killswitch"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("plain HTTP answered %d", resp.StatusCode)
		}
	}
	// No client certificate, and a certificate from another CA: refused in the handshake.
	// Raw: the point is the handshake failing; no request may reach the API.
	for name, c := range map[string]*http.Client{"no cert": tlsClient(), "other CA": tlsClient(mallory.tlsCert())} {
		if resp, err := c.Get(url); err == nil {
			resp.Body.Close()
			t.Fatalf("%s: got HTTP %d, want a refused handshake", name, resp.StatusCode)
		}
	}
	// A valid certificate maps to alice's principal: the API through the
	// typed client, over a transport carrying her certificate (exactStatus
	// checks the exact 2xx).
	hc := tlsClient(alice.tlsCert())
	hc.Transport = exactStatus{next: hc.Transport}
	asAlice, err := client.New("https://"+addr, client.WithHTTPClient(hc))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if _, err := asAlice.GetKillSwitch(ctx, "acme"); err != nil {
		t.Fatalf("alice: %v", err)
	}
	v, created, err := asAlice.Propose(ctx, "acme", contract.IntentRequest{Action: "fs.read", Target: "a.txt", IdempotencyKey: "mtls-1"})
	if err != nil || !created || v.Intent.Proposer != id {
		t.Fatalf("propose as alice: %v, created %v (want 201), proposer %q, want %s", err, created, v.Intent.Proposer, id)
	}
}

func startTLS(t *testing.T, dataDir, addr, certFile, keyFile, caFile string) *server {
	t.Helper()
	s := startServerNoWait(t, dataDir, addr, "--tls-cert", certFile, "--tls-key", keyFile, "--client-ca", caFile)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("TLS server not listening:\n%s", s.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
