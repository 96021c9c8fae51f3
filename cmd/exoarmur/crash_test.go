package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/exoarmur/exoarmur/internal/api/client"
	"github.com/exoarmur/exoarmur/internal/contract"
)

// effectCounter counts side effects where they happen: requests at a
// loopback HTTP sink (by body) and files renamed into place in the tenants'
// sandboxes (by inotify IN_MOVED_TO: every fs.write ends with one rename).
//
// The inotify count is a measurement, and it must never fail the product for
// its own faults: its reader is joined before its descriptor is closed (so no
// reader outlives its instance and reads a reused descriptor number), EINTR
// and EAGAIN are retried, and a queue overflow or any other read error is
// recorded as a lost measurement that fails the test under that name.
type effectCounter struct {
	mu    sync.Mutex
	sink  map[string]int
	files map[string]int

	lost    error  // the rename count is incomplete: why
	syncDir string // a test-private dir on the same inotify instance
	syncWd  int32
	syncN   int // sync markers created
	synced  int // highest sync marker the reader has seen
}

func (c *effectCounter) count(m map[string]int, k string) {
	c.mu.Lock()
	m[k]++
	c.mu.Unlock()
}

func (c *effectCounter) get(m map[string]int, k string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return m[k]
}

// lose records the first reason the rename count is no longer complete.
func (c *effectCounter) lose(err error) {
	c.mu.Lock()
	if c.lost == nil {
		c.lost = err
	}
	c.mu.Unlock()
}

func (c *effectCounter) lostErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lost
}

// errInotifyOverflow: the kernel dropped events (IN_Q_OVERFLOW).
var errInotifyOverflow = errors.New("inotify queue overflowed (IN_Q_OVERFLOW): events were dropped by the kernel")

// sync returns once the reader has consumed every rename event queued before
// the call: it creates a marker in syncDir, which inotify queues after them
// on the same instance, and waits until the reader has seen that marker. It
// fails the test, naming the cause, if the measurement was lost.
func (c *effectCounter) sync(t *testing.T) {
	t.Helper()
	c.mu.Lock()
	c.syncN++
	n := c.syncN
	c.mu.Unlock()
	if err := os.WriteFile(filepath.Join(c.syncDir, "s"+strconv.Itoa(n)), nil, 0o600); err != nil {
		t.Fatalf("inotify sync marker: %v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		c.mu.Lock()
		lost, seen := c.lost, c.synced >= n
		c.mu.Unlock()
		if lost != nil {
			t.Fatalf("lost measurement, not a product failure: the sandbox rename count is incomplete: %v", lost)
		}
		if seen {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("lost measurement, not a product failure: the inotify reader did not see sync marker %d within 30s", n)
		}
		time.Sleep(time.Millisecond)
	}
}

// parse counts the events in buf (whole events, as read(2) returns them).
func (c *effectCounter) parse(buf []byte, names map[int32]string) {
	for off := 0; off+unix.SizeofInotifyEvent <= len(buf); {
		ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
		end := off + unix.SizeofInotifyEvent + int(ev.Len)
		if end > len(buf) {
			c.lose(fmt.Errorf("inotify: truncated event at offset %d of %d bytes", off, len(buf)))
			return
		}
		name := strings.TrimRight(string(buf[off+unix.SizeofInotifyEvent:end]), "\x00")
		off = end
		switch {
		case ev.Mask&unix.IN_Q_OVERFLOW != 0:
			c.lose(errInotifyOverflow)
		case ev.Wd == c.syncWd && ev.Mask&unix.IN_CREATE != 0:
			if n, err := strconv.Atoi(strings.TrimPrefix(name, "s")); err == nil {
				c.mu.Lock()
				c.synced = max(c.synced, n)
				c.mu.Unlock()
			}
		case ev.Mask&unix.IN_MOVED_TO != 0:
			if dir, ok := names[ev.Wd]; ok {
				c.count(c.files, dir+"/"+name)
			}
		}
	}
}

// liveReaders counts inotify reader goroutines that have not ended. Each is
// joined when its test ends, so a new watcher must find none: a survivor
// would read whatever instance next gets its descriptor number.
var liveReaders atomic.Int32

// watchRenames counts renames into dirs until the test ends. Read the
// counts only after c.sync.
func (c *effectCounter) watchRenames(t *testing.T, dirs ...string) {
	t.Helper()
	if n := liveReaders.Load(); n != 0 {
		t.Fatalf("lost measurement, not a product failure: %d inotify reader(s) of an earlier test still running (not joined before their descriptor was closed)", n)
	}
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Fatalf("inotify: %v", err)
	}
	stopFd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(fd)
		t.Fatalf("eventfd: %v", err)
	}
	done := make(chan struct{})
	started := false
	// Stop the reader, wait for it to end, and only then close the
	// descriptors: a reader never outlives the descriptor it reads.
	t.Cleanup(func() {
		if started {
			one := []byte{1, 0, 0, 0, 0, 0, 0, 0}
			for {
				if _, err := unix.Write(stopFd, one); err != unix.EINTR {
					if err != nil {
						t.Errorf("inotify reader stop: %v", err)
					}
					break
				}
			}
			<-done
		}
		unix.Close(fd)
		unix.Close(stopFd)
		if err := c.lostErr(); err != nil {
			t.Errorf("lost measurement, not a product failure: the sandbox rename count is incomplete: %v", err)
		}
	})
	names := map[int32]string{}
	for _, d := range dirs {
		wd, err := unix.InotifyAddWatch(fd, d, unix.IN_MOVED_TO)
		if err != nil {
			t.Fatalf("inotify watch %s: %v", d, err)
		}
		names[int32(wd)] = filepath.Base(filepath.Dir(d))
	}
	c.syncDir = t.TempDir()
	wd, err := unix.InotifyAddWatch(fd, c.syncDir, unix.IN_CREATE)
	if err != nil {
		t.Fatalf("inotify watch %s: %v", c.syncDir, err)
	}
	c.syncWd = int32(wd)
	started = true
	liveReaders.Add(1)
	go func() {
		defer close(done)
		defer liveReaders.Add(-1)
		buf := make([]byte, 64<<10)
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}, {Fd: int32(stopFd), Events: unix.POLLIN}}
		stopping := false
		for {
			// Drain every pending event; after the stop signal this is
			// the last round.
			for {
				n, err := unix.Read(fd, buf)
				if err == unix.EINTR {
					continue
				}
				if err == unix.EAGAIN {
					break
				}
				if err != nil {
					c.lose(fmt.Errorf("inotify read (fd %d): %w", fd, err))
					return
				}
				if n <= 0 {
					c.lose(fmt.Errorf("inotify read (fd %d): returned %d", fd, n))
					return
				}
				c.parse(buf[:n], names)
			}
			if stopping {
				return
			}
			pfd[0].Revents, pfd[1].Revents = 0, 0
			if _, err := unix.Poll(pfd, -1); err != nil {
				if err == unix.EINTR {
					continue
				}
				c.lose(fmt.Errorf("inotify poll (fd %d): %w", fd, err))
				return
			}
			if re := pfd[0].Revents; re&(unix.POLLERR|unix.POLLNVAL|unix.POLLHUP) != 0 {
				c.lose(fmt.Errorf("inotify poll (fd %d): revents %#x", fd, re))
				return
			}
			stopping = pfd[1].Revents != 0
		}
	}()
}

// crashClient is the typed client of a server this test SIGKILLs under
// load, without a key (With adds one): every request has 10 s, so a
// request to a killed server fails rather than stalling a worker;
// exactStatus checks the exact 2xx, and noteStatus notes the status line of
// each answer for a context from answered.
func crashClient(t *testing.T, addr string) *client.Client {
	t.Helper()
	c, err := client.New("http://"+addr, client.WithHTTPClient(&http.Client{
		Timeout:   10 * time.Second,
		Transport: noteStatus{exactStatus{}},
	}))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// statusKey is the context key of the *int noteStatus writes.
type statusKey struct{}

// answered returns a context whose request notes in *st the status line of
// its answer (0: no answer, or a 2xx that exactStatus refused). A SIGKILL
// can cut an answer after its status line: the typed client then returns
// the read error, yet the server did answer 200, and this test has always
// counted such an answer to an approval, an execution or a switch change
// as acknowledged (a proposal counts only with its intent ID read).
func answered(ctx context.Context) (context.Context, *int) {
	st := new(int)
	return context.WithValue(ctx, statusKey{}, st), st
}

// noteStatus is the transport of crashClient: next, and the answer's
// status noted for a context from answered.
type noteStatus struct{ next http.RoundTripper }

func (n noteStatus) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := n.next.RoundTrip(r)
	if st, ok := r.Context().Value(statusKey{}).(*int); ok && err == nil {
		*st = resp.StatusCode
	}
	return resp, err
}

// crashIntent is one intent of the crash workload and what the client was
// told about it.
type crashIntent struct {
	tenant, idem, kind, id string
	approved, executed     bool // acknowledged (200) approval and execution
	inDoubt                bool // execute answered 409 in_doubt
}

// TestCrashUnderLoad: 2,000 intents over two tenants (A0 reads, approved A1
// sandbox writes, approved A2 posts to a slow loopback sink) run from eight
// clients while the server process is SIGKILLed at random moments three
// times and restarted, and an operator flips a third tenant's kill switch
// throughout. Afterwards: every acknowledged proposal, approval, execution
// and switch change is present; every chain verifies; no idempotency key's
// effect happened twice (counted at the sink and in the sandbox); every
// acknowledged effect happened exactly once; the executions cut mid-way
// are exactly the ones listed in doubt, an operator resolves each (audited)
// and none is ever re-run.
func TestCrashUnderLoad(t *testing.T) {
	for _, tt := range []struct {
		name  string
		flags []string
	}{
		{"default", nil},
		// fsync on every write, and the audit's group commit (atomic batches)
		{"sync_always", []string{"--sync", "always"}},
		// every write of intents and approvals with a TTL, the final
		// writes (intent, then claim) as rollups, under the same kills;
		// nothing expires within the run, so every acknowledged intent
		// must still be there
		{"retention", []string{"--retention", "1h"}},
	} {
		t.Run(tt.name, func(t *testing.T) { crashUnderLoad(t, tt.flags...) })
	}
}

func crashUnderLoad(t *testing.T, flags ...string) {
	ec := &effectCounter{sink: map[string]int{}, files: map[string]int{}}
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		ec.count(ec.sink, string(b))
		time.Sleep(60 * time.Millisecond) // slow: kills land mid-effect
		io.WriteString(w, "ok")
	}))
	defer sink.Close()
	host := strings.TrimPrefix(sink.URL, "http://")

	dataDir := t.TempDir()
	for _, tn := range []string{"acme", "beta"} {
		if err := os.MkdirAll(filepath.Join(dataDir, "sandbox", tn, "w"), 0o750); err != nil {
			t.Fatal(err)
		}
	}
	ec.watchRenames(t, filepath.Join(dataDir, "sandbox", "acme", "w"), filepath.Join(dataDir, "sandbox", "beta", "w"))
	mk := func(name, role string, tenants []string, actions string) string {
		args := []string{"keys", "create", "--data-dir", dataDir, "--name", name, "--role", role, "--actions", actions}
		for _, tn := range tenants {
			args = append(args, "--tenant", tn)
		}
		return strings.TrimSpace(run(t, args...))
	}
	agents := map[string]string{"acme": mk("acme-bot", "agent", []string{"acme"}, "*"), "beta": mk("beta-bot", "agent", []string{"beta"}, "*")}
	admin := mk("admin-all", "admin", []string{"acme", "beta", "gamma", "system"}, "A0")
	op := mk("op", "operator", []string{"acme", "beta"}, "*")
	addr := freePort(t)
	// A short lease: an execution cut by a SIGKILL reads in doubt a second
	// after its node died.
	serverFlags := append(append([]string{"--allow-host", host, "--lease", "1s"}, noLimits...), flags...)
	srv := startServer(t, dataDir, addr, serverFlags...)
	goLive(t, addr, admin)
	killswitch(t, addr, admin, "disengage", "--tenant", "beta", "--reason", "go")

	api := crashClient(t, addr)
	opc, adminc := api.With(client.WithAPIKey(op)), api.With(client.WithAPIKey(admin))

	const workers, perWorker = 8, 250 // 2,000 intents
	intents := make([][]*crashIntent, workers)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tn := []string{"acme", "beta"}[w%2]
			agent := api.With(client.WithAPIKey(agents[tn]))
			ctx := t.Context()
			retry := func(f func() bool) {
				for attempt := 0; attempt < 400 && !f(); attempt++ {
					time.Sleep(25 * time.Millisecond)
				}
			}
			for i := range perWorker {
				in := &crashIntent{tenant: tn, idem: fmt.Sprintf("crash-%d-%03d", w, i)}
				intents[w] = append(intents[w], in)
				var req contract.IntentRequest
				switch i % 4 {
				case 0:
					in.kind = "http.post"
					req = contract.IntentRequest{Action: "http.post", Target: sink.URL + "/e", Params: map[string]string{"body": tn + "/" + in.idem}, IdempotencyKey: in.idem}
				case 1:
					in.kind = "fs.write"
					req = contract.IntentRequest{Action: "fs.write", Target: "w/" + in.idem + ".txt", Params: map[string]string{"content": in.idem}, IdempotencyKey: in.idem}
				default:
					in.kind = "fs.read"
					req = contract.IntentRequest{Action: "fs.read", Target: "none.txt", IdempotencyKey: in.idem}
				}
				retry(func() bool {
					// exactStatus: no error is a 201 or a 200 (the key's intent already existed)
					v, _, err := agent.Propose(ctx, tn, req)
					if err == nil && v.Intent.ID != "" {
						in.id = v.Intent.ID
						return true
					}
					return false
				})
				if in.id == "" {
					continue
				}
				if in.kind != "fs.read" {
					retry(func() bool {
						ctx, st := answered(ctx)
						_, err := opc.DecideApproval(ctx, tn, in.id, contract.ApprovalDecision{Decision: "approve", Reason: "load"})
						ok := err == nil || *st == http.StatusOK // a 200, whole or cut by a kill
						in.approved = in.approved || ok
						return ok || refusal(err).Status == http.StatusConflict
					})
				}
				retry(func() bool {
					ctx, st := answered(ctx)
					_, err := agent.Execute(ctx, tn, in.id)
					switch e := refusal(err); {
					case err == nil || *st == http.StatusOK: // a 200, whole or cut by a kill
						in.executed = true
						return true
					case e.Status == http.StatusConflict && e.Code == "in_doubt": // cut by a crash: never re-run
						in.inDoubt = true
						return true
					}
					return false
				})
			}
		}()
	}
	// An operator flips the gamma tenant's switch all along.
	var flips []string
	var flipMu sync.Mutex
	var flipper sync.WaitGroup
	flipper.Add(1)
	go func() {
		defer flipper.Done()
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			case <-time.After(40 * time.Millisecond):
			}
			reason := fmt.Sprintf("flip-%04d", n)
			ctx, st := answered(t.Context())
			_, confirmed, err := adminc.SetKillSwitch(ctx, "gamma", contract.KillSwitchRequest{Engaged: n%2 == 0, Reason: reason})
			// a 200, whole or cut by a kill; a 202 (not confirmed in time) is not counted
			if (err == nil && confirmed) || *st == http.StatusOK {
				flipMu.Lock()
				flips = append(flips, reason)
				flipMu.Unlock()
			}
		}
	}()
	// Three SIGKILLs at random moments, each followed by a restart.
	rng := rand.New(rand.NewPCG(1, 2))
	for k := range 3 {
		time.Sleep(time.Duration(700+rng.IntN(1500)) * time.Millisecond)
		srv.kill()
		t.Logf("SIGKILL %d", k+1)
		srv = startServer(t, dataDir, addr, serverFlags...)
	}
	wg.Wait() // the workers
	close(stop)
	flipper.Wait()
	var all []*crashIntent
	for w := range workers {
		all = append(all, intents[w]...)
	}
	checkCrashRun(t, api, all, ec, flips, agents, admin, op)
}

// chainOf verifies a tenant's chain through the API (c carries the key)
// and returns its records.
func chainOf(t *testing.T, c *client.Client, tn string) []map[string]any {
	t.Helper()
	if rep, err := c.AuditVerify(t.Context(), tn); err != nil || !rep.Pass {
		t.Fatalf("%s chain: %v %+v", tn, err, rep)
	}
	var out bytes.Buffer
	if _, err := c.AuditExport(t.Context(), tn, &out); err != nil {
		t.Fatalf("%s export: %v", tn, err)
	}
	var recs []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("%s export line %q: %v", tn, line, err)
		}
		recs = append(recs, m)
	}
	return recs
}

func kindCount(recs []map[string]any, kind, corr string) int {
	n := 0
	for _, r := range recs {
		if r["kind"] == kind && (corr == "" || r["correlation_id"] == corr) {
			n++
		}
	}
	return n
}

// checkCrashRun checks the run through api (crashClient; each call adds
// its key).
func checkCrashRun(t *testing.T, api *client.Client, all []*crashIntent, ec *effectCounter, flips []string, agents map[string]string, admin, op string) {
	t.Helper()
	ctx := t.Context()
	adminc, opc := api.With(client.WithAPIKey(admin)), api.With(client.WithAPIKey(op))
	agentc := map[string]*client.Client{}
	for tn, key := range agents {
		agentc[tn] = api.With(client.WithAPIKey(key))
	}
	// Every acknowledged fs.write renamed its file before its execute was
	// answered; the reader must have counted all of those renames before
	// any count is compared.
	ec.sync(t)
	effects := func(in *crashIntent) int {
		switch in.kind {
		case "http.post":
			return ec.get(ec.sink, in.tenant+"/"+in.idem)
		case "fs.write":
			return ec.get(ec.files, in.tenant+"/"+in.idem+".txt")
		}
		return 0
	}
	chains := map[string][]map[string]any{}
	for _, tn := range []string{"acme", "beta"} {
		chains[tn] = chainOf(t, adminc, tn)
	}
	state := func(in *crashIntent) string {
		v, err := agentc[in.tenant].GetIntent(ctx, in.tenant, in.id)
		if err != nil {
			t.Fatalf("acknowledged intent %s/%s: %v", in.tenant, in.id, err)
		}
		return v.State
	}
	doubt := map[string]map[string]*crashIntent{"acme": {}, "beta": {}}
	var approved, executed, effectful int
	for _, in := range all {
		if in.id == "" {
			t.Fatalf("proposal %s/%s was never acknowledged through the restarts", in.tenant, in.idem)
		}
		st := state(in)
		if in.approved {
			approved++
			if kindCount(chains[in.tenant], "approval.granted", in.id) != 1 {
				t.Errorf("acknowledged approval of %s/%s is not in the chain", in.tenant, in.id)
			}
		}
		n := effects(in)
		if n > 1 {
			t.Errorf("%s %s/%s: side effect happened %d times", in.kind, in.tenant, in.idem, n)
		}
		if in.executed {
			executed++
			if st != "succeeded" && st != "failed" {
				t.Errorf("acknowledged execution %s/%s is %q", in.tenant, in.id, st)
			}
			if in.kind != "fs.read" && st == "succeeded" && n != 1 {
				t.Errorf("acknowledged %s %s/%s succeeded with %d effects", in.kind, in.tenant, in.idem, n)
			}
		}
		if in.kind != "fs.read" && n == 1 {
			effectful++
		}
		if st == "executing" {
			t.Errorf("%s/%s still reads executing after every node that ran it was killed or finished", in.tenant, in.id)
		}
		if in.inDoubt && st != "in_doubt" {
			t.Errorf("%s/%s answered in_doubt but is %q", in.tenant, in.id, st)
		}
		if st == "in_doubt" {
			doubt[in.tenant][in.id] = in
		}
	}
	// The in-doubt list is exactly the executions cut mid-way; an operator
	// resolves each from the evidence (was the effect seen?), audited, and
	// none runs again.
	resolved := 0
	for tn, cut := range doubt {
		list, err := opc.ListInDoubt(ctx, tn)
		if err != nil || len(list) != len(cut) {
			t.Fatalf("%s in-doubt list: %v %+v; want the %d cut executions", tn, err, list, len(cut))
		}
		for _, x := range list {
			in, ok := cut[x.IntentID]
			if !ok {
				t.Fatalf("%s: %s listed in doubt but its state says otherwise", tn, x.IntentID)
			}
			outcome := "failed"
			if effects(in) == 1 {
				outcome = "succeeded"
			}
			if _, err := opc.Resolve(ctx, tn, in.id, client.ResolveRequest{Outcome: outcome, Reason: "checked the sink after the crash"}); err != nil {
				t.Fatalf("resolve %s/%s: %v", tn, in.id, err)
			}
			if st := state(in); st != outcome {
				t.Fatalf("resolved %s/%s is %q, want %q", tn, in.id, st, outcome)
			}
			before := effects(in)
			if _, err := agentc[tn].Execute(ctx, tn, in.id); err != nil && refusal(err).Status != http.StatusConflict {
				t.Fatalf("execute of resolved %s/%s: %v", tn, in.id, err)
			}
			ec.sync(t) // count any rename that execute did before comparing
			if effects(in) != before {
				t.Fatalf("resolved %s/%s ran again", tn, in.id)
			}
			resolved++
		}
		if list, err := opc.ListInDoubt(ctx, tn); err != nil || len(list) != 0 {
			t.Fatalf("%s in doubt after resolving: %v %+v", tn, err, list)
		}
		if got := kindCount(chainOf(t, adminc, tn), "execution.resolved", ""); got != len(cut) {
			t.Fatalf("%s: %d execution.resolved records, want %d", tn, got, len(cut))
		}
	}
	// Every acknowledged kill switch change is in gamma's chain.
	seen := map[string]bool{}
	for _, r := range chainOf(t, adminc, "gamma") {
		b, _ := json.Marshal(r["payload"])
		for _, f := range flips {
			if strings.Contains(string(b), `"`+f+`"`) {
				seen[f] = true
			}
		}
	}
	for _, f := range flips {
		if !seen[f] {
			t.Errorf("acknowledged kill switch change %s is not in the chain", f)
		}
	}
	t.Logf("%d intents: %d approvals and %d executions acknowledged, %d effects (none twice), %d cut mid-way and resolved, %d switch changes acknowledged",
		len(all), approved, executed, effectful, resolved, len(flips))
}
