package app

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/exoarmur/exoarmur/internal/natsstore"
)

// selfSigned writes a self-signed certificate and its key for 127.0.0.1.
func selfSigned(t *testing.T, dir string) (cert, key string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	cert, key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	return cert, key
}

// TestCheckConfigReachesWhatItNames: check-config checks the data dir (a
// missing one serve will create is reported, exit 0, and still missing
// after; a file, or a path under a file, fails), the NATS server (an
// unreachable one fails within the bound), the TLS files and the listen
// address, and creates nothing.
func TestCheckConfigReachesWhatItNames(t *testing.T) {
	base := t.TempDir()
	empty := filepath.Join(base, "empty")
	os.Mkdir(empty, 0o750)
	withStore := filepath.Join(base, "store")
	if code, _, stderr := run("keys", "create", "--data-dir", withStore, "--name", "a", "--role", "agent", "--tenant", "acme", "--actions", "A0"); code != 0 {
		t.Fatalf("keys create: exit %d\n%s", code, stderr)
	}
	file := filepath.Join(base, "file")
	os.WriteFile(file, []byte("x"), 0o600)
	cert, key := selfSigned(t, base)

	nats, err := natsstore.StartServer(natsstore.ServerConfig{DataDir: filepath.Join(base, "nats"), Host: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer nats.Shutdown()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "nats://" + l.Addr().String()
	l.Close()
	// A listener that accepts and never speaks NATS: the connect must give up.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()

	missing := filepath.Join(base, "new", "data")
	sandbox := filepath.Join(base, "sb")
	for _, c := range []struct {
		name  string
		args  []string
		code  int
		want  []string // on stdout (exit 0) or stderr
		after string   // must still not exist
	}{
		{"empty data dir", []string{"--data-dir", empty}, 0, []string{"configuration OK\n", "\n  data dir " + empty + ": exists, writable\n",
			"\n  sandbox dir " + empty + "/sandbox: does not exist; serve will create it (in " + empty + ", writable)\n", "\n  listen 127.0.0.1:0: free\n"}, empty + "/sandbox"},
		{"missing data dir", []string{"--data-dir", missing}, 0, []string{"\n  data dir " + missing + ": does not exist; serve will create it (in " + base + ", writable)\n"}, filepath.Join(base, "new")},
		{"data dir with a store", []string{"--data-dir", withStore}, 0, []string{"\n  data dir " + withStore + ": holds a store\n"}, ""},
		{"data dir is a file", []string{"--data-dir", file}, 1, []string{"--data-dir " + file + ": not a directory"}, ""},
		{"data dir under a file", []string{"--data-dir", file + "/data"}, 1, []string{"--data-dir " + file + "/data: cannot be created: " + file + " is not a directory"}, ""},
		{"sandbox dir is a file", []string{"--data-dir", empty, "--sandbox-dir", file}, 1, []string{"--sandbox-dir " + file + ": not a directory"}, ""},
		{"NATS reachable", []string{"--nats-url", nats.ClientURL(), "--sandbox-dir", sandbox}, 0, []string{"\n  NATS " + nats.ClientURL() + ": reachable, JetStream answers\n"}, sandbox},
		{"NATS refused", []string{"--nats-url", closed, "--sandbox-dir", sandbox}, 1, []string{"--nats-url: not reachable within 3s: connect nats " + closed + ": "}, sandbox},
		{"NATS silent", []string{"--nats-url", "nats://" + silent.Addr().String(), "--sandbox-dir", sandbox}, 1, []string{"--nats-url: not reachable within 3s"}, sandbox},
		{"TLS", []string{"--data-dir", empty, "--tls-cert", cert, "--tls-key", key, "--client-ca", cert}, 0, []string{"\n  TLS certificate and key: load\n"}, ""},
		{"TLS key missing", []string{"--data-dir", empty, "--tls-cert", cert, "--tls-key", key + ".gone"}, 1, []string{"--tls-cert " + cert + ", --tls-key " + key + ".gone: open "}, ""},
		{"TLS client CA not PEM", []string{"--data-dir", empty, "--tls-cert", cert, "--tls-key", key, "--client-ca", file}, 1, []string{"--client-ca " + file + ": no PEM certificates"}, ""},
		{"listen in use", []string{"--data-dir", empty, "--listen", busy.Addr().String()}, 0, []string{"\n  WARNING listen " + busy.Addr().String() + ": cannot listen now ("}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"check-config"}, c.args...)
			if !strings.Contains(strings.Join(c.args, " "), "--listen") {
				args = append(args, "--listen", "127.0.0.1:0")
			}
			start := time.Now()
			code, out, stderr := run(args...)
			if took := time.Since(start); took > 10*time.Second {
				t.Errorf("took %s", took)
			}
			got := out
			if c.code != 0 {
				got = stderr
				if out != "" {
					t.Errorf("a failing check-config printed on stdout:\n%s", out)
				}
			}
			if code != c.code {
				t.Errorf("exit %d, want %d\n%s%s", code, c.code, out, stderr)
			}
			for _, w := range c.want {
				if !strings.Contains(got, w) {
					t.Errorf("output lacks %q:\n%s", w, got)
				}
			}
			if c.after != "" {
				if _, err := os.Stat(c.after); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("check-config created %s: %v", c.after, err)
				}
			}
		})
	}
	// The NATS server was only asked: it holds no ExoArmur stream.
	if err := natsstore.CheckExists(t.Context(), natsstore.Config{NATSURL: nats.ClientURL()}, 3*time.Second); !errors.Is(err, natsstore.ErrNoStore) {
		t.Fatalf("check-config created streams on the NATS server: %v", err)
	}
}

// TestCheckConfigUnwritableParent: a data dir serve could not create
// fails. Root may write any directory (only a read-only mount stops it),
// so this runs as another user only.
func TestCheckConfigUnwritableParent(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("skipped as root: root may create entries in a directory without write permission")
	}
	ro := filepath.Join(t.TempDir(), "ro")
	os.Mkdir(ro, 0o500)
	code, out, stderr := run("check-config", "--data-dir", filepath.Join(ro, "data"), "--listen", "127.0.0.1:0")
	if code != 1 || out != "" || !strings.Contains(stderr, "cannot be created: "+ro+" is not writable") {
		t.Fatalf("exit %d\n%s%s", code, out, stderr)
	}
}
