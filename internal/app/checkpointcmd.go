package app

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"path/filepath"
	"time"

	"github.com/exoarmur/exoarmur/internal/audit"
	"github.com/exoarmur/exoarmur/internal/checkpoint"
	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/natsstore"
	"github.com/exoarmur/exoarmur/internal/replay"
	"github.com/exoarmur/exoarmur/internal/tenant"
)

// keyFileFlags are the flags naming a node's audit key file: --audit-key,
// or its default under --data-dir.
type keyFileFlags struct {
	keyFile, dataDir string
}

func (k *keyFileFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&k.keyFile, "audit-key", "", "the node's audit key file (default <data-dir>/audit-key.json)")
	fs.StringVar(&k.dataDir, "data-dir", "./data", "the data dir whose audit-key.json to use when --audit-key is not given")
}

func (k keyFileFlags) path() string {
	if k.keyFile != "" {
		return k.keyFile
	}
	return filepath.Join(k.dataDir, "audit-key.json")
}

// runAuditPubkey prints the node's audit public key(s).
func runAuditPubkey(_ context.Context, env Env, args []string) error {
	var kf keyFileFlags
	fs := newCommand(env, cmdHelp{Name: "audit pubkey", Args: "[--audit-key F | --data-dir D] [--all]",
		About: "Prints the public key of the node's current audit key (ed25519:…), which verifies the checkpoints it signs: give it to " +
			"`replay --trusted-key`. With --all, every key of the file, one per line with its id, dates and whether it is current (retired keys still verify what they signed).",
		Example: "audit pubkey --data-dir ./data > node-1.pub"})
	kf.register(fs.FlagSet)
	all := fs.Bool("all", false, "print every key of the file, retired ones too")
	if _, err := fs.parse(args); err != nil {
		return err
	}
	keys, err := checkpoint.Load(kf.path())
	if err != nil {
		return err
	}
	if !*all {
		fmt.Fprintln(env.Stdout, audit.FormatPublicKey(keys.Signer().Public()))
		return nil
	}
	for _, k := range keys.Keys() {
		state := "current"
		if !k.Current {
			state = "retired " + k.Retired.Format(time.RFC3339)
		}
		fmt.Fprintf(env.Stdout, "%s key_id=%s created=%s %s\n", k.PublicKey, k.KeyID, k.Created.Format(time.RFC3339), state)
	}
	return nil
}

// runAuditRotate retires the current key and makes a new one.
func runAuditRotate(_ context.Context, env Env, args []string) error {
	var kf keyFileFlags
	fs := newCommand(env, cmdHelp{Name: "audit rotate-key", Args: "[--audit-key F | --data-dir D]",
		About: "Retires the node's current audit key and makes a new one current, in the key file (replaced atomically; the retired key stays, so " +
			"what it signed still verifies). Restart serve to sign with the new key: on start it records the new key in the system chain (checkpoint.key). " +
			"Give verifiers the new public key (audit pubkey) beside the old one.",
		Example: "audit rotate-key --data-dir ./data"})
	kf.register(fs.FlagSet)
	if _, err := fs.parse(args); err != nil {
		return err
	}
	keys, err := checkpoint.Load(kf.path())
	if err != nil {
		return err
	}
	old, cur, err := keys.Rotate(rand.Reader, time.Now())
	if err != nil {
		return fmt.Errorf("%w; the key file was not changed", err)
	}
	fmt.Fprintf(env.Stdout, "retired %s\nnew current key %s %s\n", old.KeyID, cur.KeyID, cur.PublicKey)
	fmt.Fprintf(env.Stderr, "restart serve to sign with %s; it records the change in the system chain when it starts\n", cur.KeyID)
	return nil
}

// runAuditCheckpoint prints a tenant chain's latest stored checkpoint.
func runAuditCheckpoint(ctx context.Context, env Env, args []string) error {
	var sc StoreConfig
	fs := newCommand(env, cmdHelp{Name: "audit checkpoint", Args: "--tenant T [--data-dir D | --nats-url U]",
		About:   "Prints the latest checkpoint stored for tenant T's chain (JSON, contracts/v1/checkpoint.schema.json): a signed head to keep outside the store and give to `replay --checkpoint`.",
		Example: "audit checkpoint --nats-url nats://127.0.0.1:4222 --tenant acme > acme.checkpoint.json"})
	sc.register(fs.FlagSet)
	tname := fs.String("tenant", "", "tenant whose chain's checkpoint to print (required)")
	if _, err := fs.parse(args); err != nil {
		return err
	}
	t, err := tenant.Parse(*tname)
	if err != nil {
		return fs.usageErr("--tenant: %v", err)
	}
	st, err := openExistingStore(ctx, sc, "exoarmur-audit")
	if err != nil {
		return err
	}
	defer st.Close()
	cp, ok, err := checkpoint.NewStore(st.Checkpoints).Latest(ctx, t, "")
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("no checkpoint of %s is stored yet: serve signs one every --checkpoint-every records or --checkpoint-interval, and POST /v1/tenants/%s/audit/checkpoint signs one now", t, t)
	}
	b, err := contract.Canonical(cp)
	if err != nil {
		return err
	}
	_, err = env.Stdout.Write(append(b, '\n'))
	return err
}

// anchorFlags are the checkpoint flags of a verification: the keys it
// trusts and the checkpoints the chains must contain.
type anchorFlags struct {
	trusted keyList
	file    string
}

func (a *anchorFlags) register(fs *flag.FlagSet) {
	fs.Var(&a.trusted, "trusted-key", "an audit public key whose checkpoints to trust (ed25519:…, or a file holding what `exoarmur audit pubkey` printed; repeatable): the chains are checked against the checkpoints they carry or the store holds")
	fs.StringVar(&a.file, "checkpoint", "", "a checkpoint (or a witness file of them) kept outside the store: each chain must contain the record it signs (needs --trusted-key)")
}

// apply configures rp: the trust, and the checkpoints required. export is
// whether rp reads an export (which must end with the checkpoint of its
// last record, and, claimed for one tenant, hold no other).
func (a anchorFlags) apply(rp *replay.Replayer, export bool) (bool, error) {
	if len(a.trusted) == 0 {
		if a.file != "" {
			return false, fmt.Errorf("%w: --checkpoint: needs --trusted-key to verify it", errUsage)
		}
		return false, nil
	}
	trust, err := a.trusted.parse("--trusted-key")
	if err != nil {
		return false, fmt.Errorf("%w: %v", errUsage, err)
	}
	rp.Anchor(trust, export, export)
	if a.file != "" {
		cps, err := checkpoint.ReadFile(a.file)
		if err != nil {
			return false, err
		}
		for _, cp := range cps {
			if err := trust.Verify(cp); err != nil {
				return false, fmt.Errorf("--checkpoint %s: %w", a.file, err)
			}
		}
		rp.Require(cps...)
	}
	return true, nil
}

// requireStored adds the latest checkpoint the store holds of t by each
// trusted key to what rp requires.
func requireStored(ctx context.Context, st *natsstore.Store, rp *replay.Replayer, a anchorFlags, t tenant.ID) error {
	trust, err := a.trusted.parse("--trusted-key")
	if err != nil {
		return err
	}
	store := checkpoint.NewStore(st.Checkpoints)
	for _, id := range trust.IDs() {
		cp, ok, err := store.Latest(ctx, t, id)
		if err != nil {
			return err
		}
		if ok {
			rp.Require(cp)
		}
	}
	return nil
}

// exportCheckpoint is the checkpoint an export from the store directly
// ends with: signed with the node's key file if it is there (after the
// chain streamed verified and extends the last checkpoint stored by that
// key), else none, and said so.
type exportCheckpoint struct {
	check *checkpoint.ChainCheck
	why   error
}

func newExportCheckpoint(ctx context.Context, st *natsstore.Store, log *audit.Log, t tenant.ID, keyPath string) exportCheckpoint {
	keys, err := checkpoint.Load(keyPath)
	if err != nil {
		return exportCheckpoint{why: err}
	}
	store := checkpoint.NewStore(st.Checkpoints)
	cps := checkpoint.New(checkpoint.Config{Audit: log, Keys: keys, Store: store, Node: "cli"})
	for _, id := range cps.Trust().IDs() {
		if cp, ok, err := store.Latest(ctx, t, id); err == nil && ok {
			cps.Observe(cp)
		}
	}
	return exportCheckpoint{check: cps.Check(t)}
}

func (e exportCheckpoint) next(raw []byte, rec contract.AuditRecord) {
	if e.check != nil {
		e.check.Next(raw, rec)
	}
}

func (e exportCheckpoint) line(ctx context.Context) ([]byte, error) {
	if e.check == nil {
		return nil, e.why
	}
	cp, err := e.check.Vouch(ctx)
	if err != nil {
		return nil, err
	}
	b, err := contract.Canonical(cp)
	return append(b, '\n'), err
}

// errNoCheckpoint wraps why an export has no checkpoint line.
var errNoCheckpoint = errors.New("the export ends without a checkpoint; `replay --trusted-key` will refuse it")
