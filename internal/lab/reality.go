package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/exoarmur/exoarmur/internal/reality"
)

// runReality: exoarmur-lab reality run|verify|client|sink (see internal/reality).
func runReality(ctx context.Context, env Env, args []string) error {
	const subs = `exoarmur-lab reality <subcommand> [flags]   (exoarmur-lab reality <subcommand> -h for its flags)

  run      the cold-reviewer run: the stack (docker-compose, or --local processes), the scenario, kill -9 and
           restart, exports, replay, the test suites, the bundle (make reality)
  verify   verify a bundle offline: SHA256SUMS, replay of the exports == replay_report.json (make reality-verify)
  client   the scenario client (run by the stack)
  sink     the loopback HTTP sink the scenario's effects reach (run by the stack)

Example: exoarmur-lab reality run --local --bin bin/exoarmur --lab bin/exoarmur-lab
`
	if len(args) == 0 {
		return fmt.Errorf("%w: expected a subcommand\n%s", errUsage, subs)
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(env.Stdout, subs)
		return nil
	}
	fs := newFlagSet("reality "+args[0], env)
	switch args[0] {
	case "run":
		local := fs.Bool("local", false, "run the stack as plain processes instead of docker-compose")
		out := fs.String("out", "artifacts/reality_run_007", "bundle directory")
		bin := fs.String("bin", "bin/exoarmur", "the built production binary (make build): NATS, the golden demo")
		lab := fs.String("lab", "bin/exoarmur-lab", "the built exoarmur-lab binary (make build): the nodes with an evidence clock, seeded keys, the sink and the scenario client")
		if err := parseFlags(fs, args[1:]); err != nil {
			return err
		}
		var abs [2]string
		for i, b := range []struct{ flag, path string }{{"--bin", *bin}, {"--lab", *lab}} {
			a, err := filepath.Abs(b.path)
			if err != nil {
				return err
			}
			if _, err := os.Stat(a); err != nil {
				return fmt.Errorf("%w: %s %s: %v (run make build)", errUsage, b.flag, b.path, err)
			}
			abs[i] = a
		}
		root, _ := os.Getwd()
		green, err := reality.Run(ctx, reality.Config{Root: root, Out: *out, Local: *local, Binary: abs[0], Lab: abs[1], Log: env.Stdout})
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
	return fmt.Errorf("%w: unknown reality subcommand %q (valid: run, verify, client, sink)\n%s", errUsage, args[0], subs)
}
