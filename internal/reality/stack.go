package reality

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// stack runs NATS, the sink and two ExoArmur nodes, and the scenario client.
type stack interface {
	Up(ctx context.Context) error
	// Client runs `exoarmur-lab reality client args...` against the stack.
	Client(ctx context.Context, args ...string) error
	// KillRestart kills NATS and both nodes with SIGKILL and starts them again.
	KillRestart(ctx context.Context) error
	Logs(ctx context.Context, w io.Writer) error
	Down(ctx context.Context) error
}

// evidenceClock makes the nodes' audit chains byte-identical across runs;
// the nodes are exoarmur-lab serve, the production serve with this clock.
const evidenceClock = "2026-01-01T00:00:00Z"

// evidenceSeed makes the keys the scenario creates over the API the same
// on every run (each node derives its own from it and its name).
const evidenceSeed = "reality"

func nodeArgs(name, listen, natsURL, sandbox string) []string {
	return []string{"serve", "--nats-url", natsURL, "--sandbox-dir", sandbox, "--listen", listen, "--node", name,
		"--allow-host", "127.0.0.1:18099", "--evidence-clock", evidenceClock, "--evidence-seed", evidenceSeed, "--no-worker"}
}

func run(ctx context.Context, log io.Writer, dir string, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = log, log
	fmt.Fprintf(log, "$ %s %s\n", name, strings.Join(args, " "))
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return nil
}

// dockerStack drives docker-compose.yml at the repository root.
type dockerStack struct {
	root, work string
	log        io.Writer
}

func (d *dockerStack) compose(ctx context.Context, args ...string) error {
	return run(ctx, d.log, d.root, "docker-compose", append([]string{"-p", "exoarmur-reality", "-f", "docker-compose.yml"}, args...)...)
}

func (d *dockerStack) Up(ctx context.Context) error {
	if err := run(ctx, d.log, d.root, "docker", "build", "-q", "-f", "deploy/Dockerfile", "-t", "exoarmur:local", "."); err != nil {
		return err
	}
	_ = d.compose(ctx, "down", "-v", "--remove-orphans")
	return d.compose(ctx, "up", "-d", "nats", "sink", "node-a", "node-b")
}

func (d *dockerStack) Client(ctx context.Context, args ...string) error {
	return d.compose(ctx, append([]string{"run", "--rm", "reality", "reality", "client", "--work", "/work"}, args...)...)
}

func (d *dockerStack) KillRestart(ctx context.Context) error {
	if err := d.compose(ctx, "kill", "-s", "SIGKILL", "node-a", "node-b", "nats"); err != nil {
		return err
	}
	return d.compose(ctx, "up", "-d", "nats", "node-a", "node-b")
}

func (d *dockerStack) Logs(ctx context.Context, w io.Writer) error {
	cmd := exec.CommandContext(ctx, "docker-compose", "-p", "exoarmur-reality", "-f", "docker-compose.yml", "logs", "--no-color", "--timestamps")
	cmd.Dir, cmd.Stdout, cmd.Stderr = d.root, w, w
	return cmd.Run()
}

func (d *dockerStack) Down(ctx context.Context) error {
	return d.compose(ctx, "down", "-v", "--remove-orphans")
}

// localStack runs the same services as plain processes of the built
// binaries: NATS from the production binary, the sink, the nodes and the
// scenario client from exoarmur-lab (as in docker-compose.yml).
type localStack struct {
	bin, lab, work string
	log            io.Writer
	procs          map[string]*exec.Cmd
}

func (l *localStack) start(name, bin string, args ...string) error {
	f, err := os.OpenFile(filepath.Join(l.work, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", name, err)
	}
	fmt.Fprintf(l.log, "started %s (pid %d): %s %s\n", name, cmd.Process.Pid, bin, strings.Join(args, " "))
	l.procs[name] = cmd
	go func() { _ = cmd.Wait(); f.Close() }()
	return nil
}

func (l *localStack) startCore() error {
	if err := l.start("nats", l.bin, "nats", "--data-dir", filepath.Join(l.work, "nats"), "--listen", "127.0.0.1:14222"); err != nil {
		return err
	}
	if err := waitTCP("127.0.0.1:14222", 30*time.Second); err != nil {
		return err
	}
	sandbox := filepath.Join(l.work, "sandbox")
	if err := l.start("node-a", l.lab, nodeArgs("node-a", "127.0.0.1:18081", DefaultEndpoints.NATS, sandbox)...); err != nil {
		return err
	}
	return l.start("node-b", l.lab, nodeArgs("node-b", "127.0.0.1:18082", DefaultEndpoints.NATS, sandbox)...)
}

func (l *localStack) Up(ctx context.Context) error {
	l.procs = map[string]*exec.Cmd{}
	if err := l.start("sink", l.lab, "reality", "sink", "--listen", "127.0.0.1:18099"); err != nil {
		return err
	}
	return l.startCore()
}

func (l *localStack) Client(ctx context.Context, args ...string) error {
	return run(ctx, l.log, "", l.lab, append([]string{"reality", "client", "--work", l.work}, args...)...)
}

func (l *localStack) kill(names ...string) {
	for _, n := range names {
		if p, ok := l.procs[n]; ok && p.Process != nil {
			_ = p.Process.Signal(syscall.SIGKILL)
			for i := 0; i < 100 && p.ProcessState == nil; i++ {
				time.Sleep(20 * time.Millisecond)
			}
			fmt.Fprintf(l.log, "killed %s with SIGKILL\n", n)
		}
	}
}

func (l *localStack) KillRestart(ctx context.Context) error {
	l.kill("node-a", "node-b", "nats")
	return l.startCore()
}

func (l *localStack) Logs(ctx context.Context, w io.Writer) error {
	for _, n := range []string{"nats", "sink", "node-a", "node-b"} {
		b, err := os.ReadFile(filepath.Join(l.work, n+".log"))
		if err != nil {
			continue
		}
		fmt.Fprintf(w, "===== %s =====\n", n)
		w.Write(b)
	}
	return nil
}

func (l *localStack) Down(ctx context.Context) error {
	l.kill("node-a", "node-b", "nats", "sink")
	return nil
}

func waitTCP(addr string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s not listening after %s", addr, d)
}
