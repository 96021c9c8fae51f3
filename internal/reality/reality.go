// Package reality is the cold-reviewer run: it brings up the stack (NATS,
// two ExoArmur nodes, a loopback sink; docker-compose, or plain processes
// with Local), runs the scenario against both nodes over HTTP, kills every
// service with SIGKILL and restarts it, runs the scenario's second phase,
// exports and replays the audit, runs the test suites, and writes the
// evidence bundle whose PASS_FAIL.txt is computed from checks that can fail.
// Verify re-checks a bundle offline.
package reality

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/exoarmur/exoarmur/internal/contract"
	"github.com/exoarmur/exoarmur/internal/replay"
)

// Config of a reality run.
type Config struct {
	Root   string // repository root
	Out    string // the bundle directory (artifacts/reality_run_007)
	Local  bool   // plain processes instead of docker-compose
	Binary string // the built production binary (bin/exoarmur): NATS and the golden demo
	Lab    string // the built exoarmur-lab binary (bin/exoarmur-lab): the nodes with an evidence clock, seeded keys, the sink, the scenario client
	Log    io.Writer
}

// Files of the bundle.
const (
	FilePassFail = "PASS_FAIL.txt"
	FileSums     = "SHA256SUMS"
	FileReplay   = "replay_report.json"
)

// suites are the go test runs whose output goes into the bundle, and the
// gate each one supports.
var suites = []struct {
	file, gate, run string
	pkgs            []string
}{
	{"02_gate5_test_outputs.txt", Gate5, "KillSwitch|Stale|Propagation|Unreadable|DefaultIsEngaged|Gate5|EveryGatedPath|Inventory|Unguarded",
		[]string{"./internal/killswitch/", "./internal/gate/", "./internal/api/", "./cmd/exoarmur/", "./internal/lab/", "./tools/inventory/"}},
	{"04_gate6_test_outputs.txt", Gate6, "Tenant|NothingWritten|Injection|Confined|Gate6|Parse|Names",
		[]string{"./internal/api/", "./internal/natsstore/", "./internal/tenant/", "./cmd/exoarmur/", "./contracts/"}},
	{"06_a3_test_outputs.txt", GateAppr, "Approval|SideEffect|Separation|Worker|Required|StatusAt|Webhook",
		[]string{"./internal/gate/", "./internal/api/", "./internal/approval/", "./cmd/exoarmur/"}},
	{"08_auth_test_outputs.txt", GateAuth, "Auth|RateLimited|MutualTLS|Keys|Create|Expiry|ListRevoke",
		[]string{"./internal/api/", "./internal/auth/", "./internal/policy/", "./cmd/exoarmur/"}},
}

// Run executes the reality run and writes the bundle. It returns an error
// only when the run itself could not proceed; failed checks make the bundle
// RED, not an error.
func Run(ctx context.Context, cfg Config) (green bool, err error) {
	log := cfg.Log
	out, _ := filepath.Abs(cfg.Out)
	work := filepath.Join(filepath.Dir(out), ".reality_work")
	if err := os.RemoveAll(out); err != nil {
		return false, err
	}
	if err := os.RemoveAll(work); err != nil {
		return false, err
	}
	for _, d := range []string{out, work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return false, err
		}
	}
	var st stack
	if cfg.Local {
		st = &localStack{bin: cfg.Binary, lab: cfg.Lab, work: work, log: log}
	} else {
		st = &dockerStack{root: cfg.Root, work: work, log: log}
	}
	var checks []Check
	gate4 := Check{Gate: Gate4, Name: "the stack ran under docker-compose with the scenario client in its own container"}
	defer func() {
		if err != nil {
			fmt.Fprintf(log, "reality: %v\n", err)
		}
	}()
	fmt.Fprintf(log, "reality: bringing the stack up (local=%t)\n", cfg.Local)
	if err := st.Up(ctx); err != nil {
		return false, fmt.Errorf("stack up: %w", err)
	}
	defer func() { _ = st.Down(context.WithoutCancel(ctx)) }()
	if err := waitTCP("127.0.0.1:14222", 60*time.Second); err != nil {
		return false, err
	}
	keys, err := bootstrapKeys(ctx, cfg.Lab, log)
	if err != nil {
		return false, err
	}
	if err := writeJSON(filepath.Join(work, "keys.json"), keys); err != nil {
		return false, err
	}
	fmt.Fprintln(log, "reality: phase 1 (every gate live)")
	p1err := st.Client(ctx, "--phase", "1")
	fmt.Fprintln(log, "reality: SIGKILL NATS and both nodes, restart them")
	krErr := st.KillRestart(ctx)
	fmt.Fprintln(log, "reality: phase 2 (after the restarts)")
	p2err := st.Client(ctx, "--phase", "2")
	for _, ph := range []string{"phase1.json", "phase2.json"} {
		var cs []Check
		if err := readJSON(filepath.Join(work, ph), &cs); err != nil {
			checks = append(checks, Check{Gate: Gate1, Name: "scenario " + ph, Detail: "missing: " + err.Error()})
			continue
		}
		checks = append(checks, cs...)
	}
	checks = append(checks, Check{Gate: Gate1, Name: "services killed with SIGKILL and restarted", Pass: krErr == nil, Detail: errText(krErr)})
	gate4.Pass = !cfg.Local && p1err == nil && p2err == nil && krErr == nil
	gate4.Detail = fmt.Sprintf("mode=%s phase1=%s phase2=%s restart=%s", map[bool]string{true: "local processes", false: "docker-compose"}[cfg.Local],
		errText(p1err), errText(p2err), errText(krErr))
	checks = append(checks, gate4)

	// Service logs, then the stack goes down.
	var logs bytes.Buffer
	_ = st.Logs(ctx, &logs)
	if err := os.WriteFile(filepath.Join(out, "service_logs.txt"), logs.Bytes(), 0o644); err != nil {
		return false, err
	}
	_ = st.Down(ctx)

	// Gate 3: replay the exports, twice, and compare.
	var exportFiles []string
	for _, tn := range []string{"acme", "beta"} {
		b, err := os.ReadFile(filepath.Join(work, "export_"+tn+".jsonl"))
		if err != nil {
			checks = append(checks, Check{Gate: Gate3, Name: "export of " + tn, Detail: err.Error()})
			continue
		}
		name := "audit_export_" + tn + ".jsonl"
		if err := os.WriteFile(filepath.Join(out, name), b, 0o644); err != nil {
			return false, err
		}
		exportFiles = append(exportFiles, filepath.Join(out, name))
	}
	rep1, b1, err1 := ReplayFiles(exportFiles)
	_, b2, err2 := ReplayFiles(exportFiles)
	checks = append(checks, Check{Gate: Gate3, Name: "offline replay of the exports passes, twice byte-identical", Pass: err1 == nil && err2 == nil && rep1.Pass && bytes.Equal(b1, b2),
		Detail: fmt.Sprintf("pass=%t records=%d decisions=%d matched=%d mismatches=%d replay_hash=%s identical=%t", rep1.Pass, rep1.Records,
			rep1.Decisions, rep1.DecisionsMatched, len(rep1.Mismatches), rep1.ReplayHash, bytes.Equal(b1, b2))})
	if err := os.WriteFile(filepath.Join(out, FileReplay), b1, 0o644); err != nil {
		return false, err
	}

	// The test suites, the whole test suite and the golden demo.
	for _, s := range suites {
		ok := goTest(ctx, cfg.Root, filepath.Join(out, s.file), s.run, s.pkgs, checksFor(checks, s.gate))
		checks = append(checks, Check{Gate: s.gate, Name: "go test -v suite " + s.file, Pass: ok})
	}
	allOK := goTest(ctx, cfg.Root, filepath.Join(out, "09_all_tests.txt"), "", []string{"./..."}, nil)
	checks = append(checks, Check{Gate: "all_tests", Name: "go test ./... (every unit and integration test)", Pass: allOK})
	demoOK := runTo(ctx, cfg.Root, filepath.Join(out, "10_golden_demo.txt"), cfg.Binary, "demo")
	checks = append(checks, Check{Gate: "golden_demo", Name: "exoarmur demo ends DEMO_RESULT=PASS", Pass: demoOK})
	invOK := runTo(ctx, cfg.Root, filepath.Join(out, "11_inventory_check.txt"), "go", "run", "./tools/inventory", "-check")
	checks = append(checks, Check{Gate: Gate5, Name: "the execution surface inventory is current and has no violation", Pass: invOK})

	// Design notes and the execution surface.
	for _, f := range []string{"00_execution_surface.md", "01_kill_switch_design.md", "03_tenancy_isolation_design.md", "05_a3_approval_design.md", "07_auth_design.md"} {
		b, err := os.ReadFile(filepath.Join(cfg.Root, "docs", "design", f))
		if err != nil {
			return false, err
		}
		if err := os.WriteFile(filepath.Join(out, f), b, 0o644); err != nil {
			return false, err
		}
	}
	if err := os.WriteFile(filepath.Join(out, "COMMANDS.md"), []byte(commandsMD), 0o644); err != nil {
		return false, err
	}
	if err := writeJSON(filepath.Join(out, "checks.json"), checks); err != nil {
		return false, err
	}
	pf, green := passFail(checks, cfg.Local)
	if err := os.WriteFile(filepath.Join(out, FilePassFail), pf, 0o644); err != nil {
		return false, err
	}
	if err := writeSums(out); err != nil {
		return false, err
	}
	log.Write(pf)
	return green, nil
}

func errText(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}

func checksFor(all []Check, gate string) []Check {
	var out []Check
	for _, c := range all {
		if c.Gate == gate {
			out = append(out, c)
		}
	}
	return out
}

// passFail computes PASS_FAIL.txt: a gate passes when it has at least one
// check and every check passes.
func passFail(checks []Check, local bool) ([]byte, bool) {
	var b bytes.Buffer
	green := true
	lines := append(slices.Clone(Gates), "all_tests", "golden_demo")
	for _, g := range lines {
		n, failed := 0, []string{}
		for _, c := range checks {
			if c.Gate == g {
				n++
				if !c.Pass {
					failed = append(failed, c.Name)
				}
			}
		}
		status := "PASS"
		switch {
		case g == Gate4 && local:
			status = "NOT RUN (LOCAL=1: no docker-compose)"
			green = false
		case n == 0:
			status = "FAIL (no check ran)"
			green = false
		case len(failed) > 0:
			status = "FAIL (" + strings.Join(failed, "; ") + ")"
			green = false
		}
		fmt.Fprintf(&b, "%-28s %s (%d checks)\n", g, status, n)
	}
	overall := "GREEN"
	if !green {
		overall = "RED"
	}
	fmt.Fprintf(&b, "OVERALL %s\n", overall)
	return b.Bytes(), green
}

// goTest runs go test -v and writes its output plus the scenario's checks
// for the same gate into file; it reports whether go test passed.
func goTest(ctx context.Context, root, file, run string, pkgs []string, scenario []Check) bool {
	args := []string{"test", "-count=1", "-v"}
	if run != "" {
		args = append(args, "-run", run)
	}
	args = append(args, pkgs...)
	var b bytes.Buffer
	fmt.Fprintf(&b, "$ go %s\n", strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir, cmd.Stdout, cmd.Stderr = root, &b, &b
	err := cmd.Run()
	fmt.Fprintf(&b, "exit: %s\n", errText(err))
	if len(scenario) > 0 {
		fmt.Fprintf(&b, "\n== the reality scenario's own checks for this gate ==\n")
		for _, c := range scenario {
			fmt.Fprintf(&b, "[%s] %s: %s\n", map[bool]string{true: "PASS", false: "FAIL"}[c.Pass], c.Name, c.Detail)
		}
	}
	_ = os.WriteFile(file, b.Bytes(), 0o644)
	return err == nil
}

func runTo(ctx context.Context, root, file, name string, args ...string) bool {
	var b bytes.Buffer
	fmt.Fprintf(&b, "$ %s %s\n", name, strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir, cmd.Stdout, cmd.Stderr = root, &b, &b
	err := cmd.Run()
	fmt.Fprintf(&b, "exit: %s\n", errText(err))
	_ = os.WriteFile(file, b.Bytes(), 0o644)
	return err == nil
}

// bootstrapKeys creates the scenario's principals on the stack's NATS with
// seeded keys (exoarmur-lab keys create --evidence-seed; evidence runs
// only), so the chains are reproducible.
func bootstrapKeys(ctx context.Context, lab string, log io.Writer) (Keys, error) {
	mk := func(seed, role string, tenants []string, actions string) (string, error) {
		args := []string{"keys", "create", "--nats-url", DefaultEndpoints.NATS, "--evidence-seed", "reality-" + seed, "--name", seed, "--role", role, "--actions", actions}
		for _, t := range tenants {
			args = append(args, "--tenant", t)
		}
		var outb, errb bytes.Buffer
		cmd := exec.CommandContext(ctx, lab, args...)
		cmd.Stdout, cmd.Stderr = &outb, &errb
		if err := cmd.Run(); err != nil {
			return "", fmt.Errorf("keys create %s: %v: %s", seed, err, errb.String())
		}
		fmt.Fprintf(log, "created key %s (%s)\n", seed, role)
		return strings.TrimSpace(outb.String()), nil
	}
	var k Keys
	var err error
	for _, x := range []struct {
		dst        *string
		seed, role string
		tenants    []string
		actions    string
	}{
		{&k.Admin, "admin", "admin", []string{"acme", "beta", "system"}, "A0"},
		{&k.AcmeBot, "acme-bot", "agent", []string{"acme"}, "*"},
		{&k.AcmeOp, "acme-op", "operator", []string{"acme"}, "*"},
		{&k.AcmeOp2, "acme-op2", "operator", []string{"acme"}, "*"},
		{&k.BetaBot, "beta-bot", "agent", []string{"beta"}, "*"},
		{&k.BetaOp, "beta-op", "operator", []string{"beta"}, "A0"},
		{&k.AcmeRead, "acme-reader", "agent", []string{"acme"}, "A0"},
	} {
		if *x.dst, err = mk(x.seed, x.role, x.tenants, x.actions); err != nil {
			return Keys{}, err
		}
	}
	return k, nil
}

// ClientMain is `exoarmur-lab reality client --phase N --work DIR`: one phase of
// the scenario, reading keys and state from DIR and writing its checks there.
func ClientMain(ctx context.Context, phase int, work string) error {
	var keys Keys
	if err := readJSON(filepath.Join(work, "keys.json"), &keys); err != nil {
		return err
	}
	switch phase {
	case 1:
		checks, st, err := Phase1(ctx, DefaultEndpoints, keys)
		if err != nil {
			return err
		}
		if err := writeJSON(filepath.Join(work, "state.json"), st); err != nil {
			return err
		}
		return writeJSON(filepath.Join(work, "phase1.json"), checks)
	case 2:
		var st State
		if err := readJSON(filepath.Join(work, "state.json"), &st); err != nil {
			return err
		}
		checks, exports, err := Phase2(ctx, DefaultEndpoints, keys, st)
		if err != nil {
			return err
		}
		for tn, b := range exports {
			if err := os.WriteFile(filepath.Join(work, "export_"+tn+".jsonl"), b, 0o644); err != nil {
				return err
			}
		}
		return writeJSON(filepath.Join(work, "phase2.json"), checks)
	}
	return fmt.Errorf("phase %d: must be 1 or 2", phase)
}

// ReplayFiles replays exports together and returns the report and its
// canonical bytes.
func ReplayFiles(files []string) (contract.ReplayReport, []byte, error) {
	rp := replay.New("")
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return contract.ReplayReport{}, nil, err
		}
		err = rp.ReadJSONL(fh)
		fh.Close()
		if err != nil {
			return contract.ReplayReport{}, nil, err
		}
	}
	rep := rp.Report()
	b, err := replay.Encode(rep)
	return rep, b, err
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// writeSums writes SHA256SUMS over every other file of the bundle.
func writeSums(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var b bytes.Buffer
	for _, e := range entries {
		if e.IsDir() || e.Name() == FileSums {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		fmt.Fprintf(&b, "%s  %s\n", hex.EncodeToString(sum[:]), e.Name())
	}
	return os.WriteFile(filepath.Join(dir, FileSums), b.Bytes(), 0o644)
}

// Verify re-checks a bundle offline: every file matches SHA256SUMS and none
// is unlisted, the exports replay to exactly the bundled replay report with
// pass=true, and PASS_FAIL.txt is GREEN.
func Verify(dir string, log io.Writer) (bool, error) {
	ok := true
	fail := func(format string, args ...any) {
		ok = false
		fmt.Fprintf(log, "FAIL "+format+"\n", args...)
	}
	sums, err := os.ReadFile(filepath.Join(dir, FileSums))
	if err != nil {
		return false, err
	}
	listed := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(sums)), "\n") {
		want, name, found := strings.Cut(line, "  ")
		if !found {
			fail("SHA256SUMS line %q", line)
			continue
		}
		listed[name] = true
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			fail("%s: %v", name, err)
			continue
		}
		sum := sha256.Sum256(data)
		if hex.EncodeToString(sum[:]) != want {
			fail("%s does not match SHA256SUMS", name)
		}
	}
	entries, _ := os.ReadDir(dir)
	var exports []string
	for _, e := range entries {
		if !e.IsDir() && e.Name() != FileSums && !listed[e.Name()] {
			fail("%s is not listed in SHA256SUMS", e.Name())
		}
		if strings.HasPrefix(e.Name(), "audit_export_") {
			exports = append(exports, filepath.Join(dir, e.Name()))
		}
	}
	fmt.Fprintf(log, "checked %d files against SHA256SUMS\n", len(listed))
	slices.Sort(exports)
	rep, got, err := ReplayFiles(exports)
	if err != nil {
		return false, err
	}
	want, err := os.ReadFile(filepath.Join(dir, FileReplay))
	if err != nil {
		return false, err
	}
	switch {
	case len(exports) == 0:
		fail("no audit exports in the bundle")
	case !rep.Pass:
		fail("replay of the exports does not pass: %+v", rep.Mismatches)
	case !bytes.Equal(got, want):
		fail("replaying the exports gives a different report than %s", FileReplay)
	default:
		fmt.Fprintf(log, "replayed %d records from %d exports: pass, identical to %s (replay_hash %s)\n", rep.Records, len(exports), FileReplay, rep.ReplayHash)
	}
	pf, err := os.ReadFile(filepath.Join(dir, FilePassFail))
	if err != nil {
		return false, err
	}
	if !strings.Contains(string(pf), "OVERALL GREEN") {
		fail("PASS_FAIL.txt is not GREEN")
	}
	if ok {
		fmt.Fprintln(log, "VERIFY GREEN")
	} else {
		fmt.Fprintln(log, "VERIFY RED")
	}
	return ok, nil
}
