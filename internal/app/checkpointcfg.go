package app

import (
	"crypto/ed25519"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/checkpoint"
)

// CheckpointConfig is how a node signs its audit chains' checkpoints
// (internal/checkpoint): its key file, when it signs, its witness and the
// other nodes' keys it trusts.
type CheckpointConfig struct {
	// KeyFile is the node's audit key file (default <data-dir>/audit-key.json).
	KeyFile  string
	Every    int
	Interval time.Duration
	// Witness is an http(s) URL or a file outside the data dir ("": none).
	Witness string
	// Trusted are other nodes' public keys (audit.FormatPublicKey).
	Trusted keyList
	trust   audit.Trust
}

// keyList is a repeatable flag of public keys, kept as given (base64 is
// case sensitive).
type keyList []string

func (k *keyList) String() string { return strings.Join(*k, ",") }
func (k *keyList) Set(v string) error {
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*k = append(*k, p)
		}
	}
	return nil
}

// parse returns the keys as a trust.
func (k keyList) parse(flagName string) (audit.Trust, error) {
	var pubs []ed25519.PublicKey
	for _, s := range k {
		if !strings.HasPrefix(s, "ed25519:") {
			// A file holding the key (what `exoarmur audit pubkey` printed).
			b, err := os.ReadFile(s)
			if err != nil {
				return nil, fmt.Errorf("%s %q: neither a public key (ed25519:…) nor a readable file: %v", flagName, clipArg(s), err)
			}
			s = strings.TrimSpace(string(b))
		}
		for _, line := range strings.Fields(s) {
			if !strings.HasPrefix(line, "ed25519:") {
				continue // `audit pubkey --all` prints key ids and dates beside the keys
			}
			pub, err := audit.ParsePublicKey(line)
			if err != nil {
				return nil, fmt.Errorf("%s: %v", flagName, err)
			}
			pubs = append(pubs, pub)
		}
	}
	if len(k) > 0 && len(pubs) == 0 {
		return nil, fmt.Errorf("%s: no public key found (give what `exoarmur audit pubkey` prints)", flagName)
	}
	return audit.NewTrust(pubs...), nil
}

func clipArg(s string) string {
	if len(s) > 60 {
		return s[:60] + "…"
	}
	return s
}

func (c *CheckpointConfig) register(fs *flag.FlagSet) {
	fs.StringVar(&c.KeyFile, "audit-key", "", "the node's ed25519 audit key file, created on first start (mode 0600; default <data-dir>/audit-key.json); it signs the audit chains' checkpoints")
	fs.IntVar(&c.Every, "checkpoint-every", checkpoint.DefaultEvery, "sign a tenant chain's head after this many records this node appended to it (0: only by time and on demand)")
	fs.DurationVar(&c.Interval, "checkpoint-interval", checkpoint.DefaultInterval, "sign the head of every chain that gained records at least this often (0: only by count and on demand)")
	fs.StringVar(&c.Witness, "checkpoint-witness", "", "send a copy of every checkpoint to this http(s) URL (POST, JSON) or append it to this file, which must be outside the data dir")
	fs.Var(&c.Trusted, "trusted-key", "another node's audit public key (ed25519:…, or a file holding what `exoarmur audit pubkey` printed; repeatable): its checkpoints count as seen")
}

// Validate checks the flags; dataDir is the store's data dir.
func (c *CheckpointConfig) Validate(dataDir string) error {
	if c.KeyFile == "" {
		if dataDir == "" {
			return fmt.Errorf("--audit-key: required with --nats-url and no --data-dir")
		}
		c.KeyFile = filepath.Join(dataDir, "audit-key.json")
	}
	if c.Every < 0 {
		return fmt.Errorf("--checkpoint-every %d: must be 0 or more", c.Every)
	}
	if c.Interval < 0 || (c.Interval > 0 && c.Interval < time.Second) {
		return fmt.Errorf("--checkpoint-interval %s: must be 0 or at least 1s", c.Interval)
	}
	if c.Witness != "" {
		if _, err := checkpoint.ParseWitness(c.Witness, dataDir); err != nil {
			return fmt.Errorf("--checkpoint-witness: %v", err)
		}
	}
	var err error
	if c.trust, err = c.Trusted.parse("--trusted-key"); err != nil {
		return err
	}
	return nil
}
