package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/exoarmur/exoarmur/internal/natsstore"
)

// natsCheckTimeout bounds check-config's connection to --nats-url.
const natsCheckTimeout = 3 * time.Second

// runCheckConfig validates serve's flags (exit 2 when one is wrong), then
// checks what they name, creating nothing: the data dir and the sandbox
// dir (serve creates them when missing, so a missing one is reported, not
// refused, unless it cannot be created), the NATS server (one connection,
// bounded by natsCheckTimeout), the TLS files and the listen address.
// Something serve could not use fails with exit 1. It prints
// "configuration OK" and one line per check. The actions file
// (--actions-file) is parsed and checked with its secrets by Validate, as
// serve does.
func runCheckConfig(ctx context.Context, env Env, args []string) error {
	c, err := parseServe("check-config", env, args, nil)
	if err != nil {
		return err
	}
	var notes []string
	if c.Store.NATSURL != "" {
		if err := natsstore.Probe(ctx, c.Store.NATSURL, natsCheckTimeout); err != nil {
			return fmt.Errorf("--nats-url: not reachable within %s: %w", natsCheckTimeout, err)
		}
		notes = append(notes, "NATS "+c.Store.NATSURL+": reachable, JetStream answers")
	} else {
		note, err := checkDir("--data-dir", c.Store.DataDir)
		if err != nil {
			return err
		}
		if natsstore.CheckExists(ctx, natsstore.Config{DataDir: c.Store.DataDir}, natsCheckTimeout) == nil {
			note = "holds a store"
		}
		notes = append(notes, "data dir "+c.Store.DataDir+": "+note)
	}
	if c.ActionsFile != "" {
		names := declaredNames(c.Actions)
		notes = append(notes, fmt.Sprintf("actions file %s: %d declared actions (%s), their secrets set", c.ActionsFile, len(names), strings.Join(names, ", ")))
	}
	if c.MCP != nil {
		var servers []string
		for _, srv := range c.MCP.Servers {
			servers = append(servers, srv.Name+" ("+srv.Transport()+")")
		}
		notes = append(notes, fmt.Sprintf("mcp config %s: %d upstream servers: %s, their secrets set (not connected by check-config)", c.MCPConfigFile, len(servers), strings.Join(servers, ", ")))
	}
	note, err := checkDir("--sandbox-dir", c.SandboxDir)
	if err != nil {
		return err
	}
	notes = append(notes, "sandbox dir "+c.SandboxDir+": "+note)
	if c.TLSCert != "" {
		if _, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey); err != nil {
			return fmt.Errorf("--tls-cert %s, --tls-key %s: %w", c.TLSCert, c.TLSKey, err)
		}
		if _, err := tlsConfig(c); err != nil {
			return err
		}
		notes = append(notes, "TLS certificate and key: load")
	}
	// The listen address: a port in use now is a warning, not a failure
	// (check-config may run while the server it is about to replace runs).
	if ln, err := net.Listen("tcp", c.Listen); err != nil {
		notes = append(notes, "WARNING listen "+c.Listen+": cannot listen now ("+err.Error()+"); serve fails until it can")
	} else {
		ln.Close()
		notes = append(notes, "listen "+c.Listen+": free")
	}
	if c.PolicyDir != "" {
		notes = append(notes, fmt.Sprintf("policy dir %s: valid, %d policies, bundle %s", c.PolicyDir, policyCount(c.Policy), c.Policy.Hash()))
	}
	fmt.Fprintln(env.Stdout, "configuration OK")
	for _, n := range notes {
		fmt.Fprintln(env.Stdout, "  "+n)
	}
	return nil
}

// checkDir reports a directory serve uses and creates when missing: an
// existing directory must be writable; a missing one must be creatable
// (its nearest existing ancestor a writable directory). A path that is a
// file, or that cannot be written or created, is an error.
func checkDir(flagName, dir string) (string, error) {
	fi, err := os.Stat(dir)
	switch {
	case err == nil && !fi.IsDir():
		return "", fmt.Errorf("%s %s: not a directory", flagName, dir)
	case err == nil:
		if err := writable(dir); err != nil {
			return "", fmt.Errorf("%s %s: not writable: %w", flagName, dir, err)
		}
		return "exists, writable", nil
	case !missing(err):
		return "", fmt.Errorf("%s %s: %w", flagName, dir, err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", flagName, dir, err)
	}
	for parent := filepath.Dir(abs); ; parent = filepath.Dir(parent) {
		fi, err := os.Stat(parent)
		switch {
		case missing(err) && parent != filepath.Dir(parent):
			continue
		case err != nil:
			return "", fmt.Errorf("%s %s: cannot be created: %w", flagName, dir, err)
		case !fi.IsDir():
			return "", fmt.Errorf("%s %s: cannot be created: %s is not a directory", flagName, dir, parent)
		}
		if err := writable(parent); err != nil {
			return "", fmt.Errorf("%s %s: cannot be created: %s is not writable: %w", flagName, dir, parent, err)
		}
		return "does not exist; serve will create it (in " + parent + ", writable)", nil
	}
}

// missing: a stat error for a path that does not exist (or whose parent
// is not a directory: an ancestor decides whether it can be created).
func missing(err error) bool {
	return errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

// writable asks the kernel whether this process may create entries in
// dir (access(2) W_OK: permissions, and a read-only mount), creating
// nothing.
func writable(dir string) error {
	const wOK = 0x2
	return syscall.Access(dir, wOK)
}
