package app

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/exoarmur/exoarmur/internal/reality"
)

// runReality: exoarmur reality run|verify|client|sink (see internal/reality).
func runReality(ctx context.Context, env Env, args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: expected: exoarmur reality run [--local] | verify | client --phase N | sink", errUsage)
	}
	fs := newFlagSet("reality "+args[0], env)
	switch args[0] {
	case "run":
		local := fs.Bool("local", false, "run the stack as plain processes instead of docker-compose")
		out := fs.String("out", "artifacts/reality_run_007", "bundle directory")
		bin := fs.String("bin", "bin/exoarmur", "the built exoarmur binary (make build)")
		if err := parseFlags(fs, args[1:]); err != nil {
			return err
		}
		abs, err := filepath.Abs(*bin)
		if err != nil {
			return err
		}
		if _, err := os.Stat(abs); err != nil {
			return fmt.Errorf("%w: --bin %s: %v (run make build)", errUsage, *bin, err)
		}
		root, _ := os.Getwd()
		green, err := reality.Run(ctx, reality.Config{Root: root, Out: *out, Local: *local, Binary: abs, Log: env.Stdout})
		if err != nil {
			return err
		}
		if !green {
			return errors.New("the bundle is RED (see PASS_FAIL.txt)")
		}
		return nil
	case "verify":
		dir := fs.String("bundle", "artifacts/reality_run_007", "bundle directory")
		if err := parseFlags(fs, args[1:]); err != nil {
			return err
		}
		ok, err := reality.Verify(*dir, env.Stdout)
		if err != nil {
			return err
		}
		if !ok {
			return errors.New("verification is RED")
		}
		return nil
	case "client":
		phase := fs.Int("phase", 0, "scenario phase: 1 (fresh stack) or 2 (after the restarts)")
		work := fs.String("work", "", "work directory shared with the orchestrator")
		if err := parseFlags(fs, args[1:]); err != nil {
			return err
		}
		return reality.ClientMain(ctx, *phase, *work)
	case "sink":
		listen := fs.String("listen", "127.0.0.1:18099", "loopback address")
		if err := parseFlags(fs, args[1:]); err != nil {
			return err
		}
		s, err := reality.StartSink(ctx, *listen)
		if err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "reality sink listening on %s\n", *listen)
		<-ctx.Done()
		fmt.Fprintf(env.Stdout, "reality sink stopped after %d side effects\n", s.Count())
		return nil
	}
	return fmt.Errorf("%w: unknown reality subcommand %q", errUsage, args[0])
}
