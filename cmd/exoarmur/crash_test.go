package main_test

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// effectCounter counts side effects where they happen: requests at a
// loopback HTTP sink (by body) and files renamed into place in the tenants'
// sandboxes (by inotify IN_MOVED_TO: every fs.write ends with one rename).
type effectCounter struct {
	mu    sync.Mutex
	sink  map[string]int
	files map[string]int
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

// watchRenames counts renames into dirs until the test ends.
func (c *effectCounter) watchRenames(t *testing.T, dirs ...string) {
	t.Helper()
	fd, err := syscall.InotifyInit1(syscall.IN_CLOEXEC)
	if err != nil {
		t.Fatalf("inotify: %v", err)
	}
	names := map[int32]string{}
	for _, d := range dirs {
		wd, err := syscall.InotifyAddWatch(fd, d, syscall.IN_MOVED_TO)
		if err != nil {
			t.Fatalf("inotify watch %s: %v", d, err)
		}
		names[int32(wd)] = filepath.Base(filepath.Dir(d))
	}
	t.Cleanup(func() { syscall.Close(fd) })
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := syscall.Read(fd, buf)
			if err != nil || n <= 0 {
				return
			}
			for off := 0; off+syscall.SizeofInotifyEvent <= n; {
				ev := (*syscall.InotifyEvent)(unsafe.Pointer(&buf[off]))
				name := strings.TrimRight(string(buf[off+syscall.SizeofInotifyEvent:off+syscall.SizeofInotifyEvent+int(ev.Len)]), "\x00")
				c.count(c.files, names[ev.Wd]+"/"+name)
				off += syscall.SizeofInotifyEvent + int(ev.Len)
			}
		}
	}()
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
	admin := mk("admin-all", "admin", []string{"acme", "beta", "gamma"}, "A0")
	op := mk("op", "operator", []string{"acme", "beta"}, "A0")
	addr := freePort(t)
	serverFlags := append([]string{"--allow-host", host}, flags...)
	srv := startServer(t, dataDir, addr, serverFlags...)
	goLive(t, addr, admin)
	killswitch(t, addr, admin, "disengage", "--tenant", "beta", "--reason", "go")

	client := &http.Client{Timeout: 10 * time.Second}
	do := func(method, path, key, body string) (int, []byte) {
		req, _ := http.NewRequest(method, "http://"+addr+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := client.Do(req)
		if err != nil {
			return -1, []byte(err.Error())
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	errCode := func(b []byte) string {
		var v struct {
			Error struct{ Code string } `json:"error"`
		}
		_ = json.Unmarshal(b, &v)
		return v.Error.Code
	}

	const workers, perWorker = 8, 250 // 2,000 intents
	intents := make([][]*crashIntent, workers)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tn := []string{"acme", "beta"}[w%2]
			key := agents[tn]
			retry := func(f func() bool) {
				for attempt := 0; attempt < 400 && !f(); attempt++ {
					time.Sleep(25 * time.Millisecond)
				}
			}
			for i := range perWorker {
				in := &crashIntent{tenant: tn, idem: fmt.Sprintf("crash-%d-%03d", w, i)}
				intents[w] = append(intents[w], in)
				var body string
				switch i % 4 {
				case 0:
					in.kind = "http.post"
					body = fmt.Sprintf(`{"action":"http.post","target":%q,"params":{"body":%q},"idempotency_key":%q}`, sink.URL+"/e", tn+"/"+in.idem, in.idem)
				case 1:
					in.kind = "fs.write"
					body = fmt.Sprintf(`{"action":"fs.write","target":"w/%s.txt","params":{"content":%q},"idempotency_key":%q}`, in.idem, in.idem, in.idem)
				default:
					in.kind = "fs.read"
					body = fmt.Sprintf(`{"action":"fs.read","target":"none.txt","idempotency_key":%q}`, in.idem)
				}
				retry(func() bool {
					code, out := do("POST", "/v1/tenants/"+tn+"/intents", key, body)
					var v struct {
						Intent struct{ ID string } `json:"intent"`
					}
					if (code == 201 || code == 200) && json.Unmarshal(out, &v) == nil && v.Intent.ID != "" {
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
						code, _ := do("POST", "/v1/tenants/"+tn+"/intents/"+in.id+"/approvals", op, `{"decision":"approve","reason":"load"}`)
						in.approved = in.approved || code == 200
						return code == 200 || code == 409
					})
				}
				retry(func() bool {
					code, out := do("POST", "/v1/tenants/"+tn+"/intents/"+in.id+"/execute", key, "")
					switch {
					case code == 200:
						in.executed = true
						return true
					case code == 409 && errCode(out) == "in_doubt": // cut by a crash: never re-run
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
			body := fmt.Sprintf(`{"engaged":%v,"reason":%q}`, n%2 == 0, reason)
			if code, _ := do("PUT", "/v1/tenants/gamma/killswitch", admin, body); code == 200 {
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
	checkCrashRun(t, do, all, ec, flips, agents, admin, op)
}

type doFunc func(method, path, key, body string) (int, []byte)

// chainOf verifies a tenant's chain through the API and returns its records.
func chainOf(t *testing.T, do doFunc, tn, key string) []map[string]any {
	t.Helper()
	if code, out := do("GET", "/v1/tenants/"+tn+"/audit/verify", key, ""); code != 200 || !strings.Contains(string(out), `"pass":true`) {
		t.Fatalf("%s chain: %d %s", tn, code, out)
	}
	code, out := do("GET", "/v1/tenants/"+tn+"/audit/export", key, "")
	if code != 200 {
		t.Fatalf("%s export: %d %s", tn, code, out)
	}
	var recs []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
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

func checkCrashRun(t *testing.T, do doFunc, all []*crashIntent, ec *effectCounter, flips []string, agents map[string]string, admin, op string) {
	t.Helper()
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
		chains[tn] = chainOf(t, do, tn, admin)
	}
	state := func(in *crashIntent) string {
		code, out := do("GET", "/v1/tenants/"+in.tenant+"/intents/"+in.id, agents[in.tenant], "")
		var v struct{ State string }
		if code != 200 || json.Unmarshal(out, &v) != nil {
			t.Fatalf("acknowledged intent %s/%s: %d %s", in.tenant, in.id, code, out)
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
		code, out := do("GET", "/v1/tenants/"+tn+"/intents?state=in_doubt", op, "")
		var v struct {
			Intents []struct {
				IntentID string `json:"intent_id"`
			} `json:"intents"`
		}
		if code != 200 || json.Unmarshal(out, &v) != nil || len(v.Intents) != len(cut) {
			t.Fatalf("%s in-doubt list: %d %s; want the %d cut executions", tn, code, out, len(cut))
		}
		for _, x := range v.Intents {
			in, ok := cut[x.IntentID]
			if !ok {
				t.Fatalf("%s: %s listed in doubt but its state says otherwise", tn, x.IntentID)
			}
			outcome := "failed"
			if effects(in) == 1 {
				outcome = "succeeded"
			}
			if code, out := do("POST", "/v1/tenants/"+tn+"/intents/"+in.id+"/resolve", op, `{"outcome":"`+outcome+`","reason":"checked the sink after the crash"}`); code != 200 {
				t.Fatalf("resolve %s/%s: %d %s", tn, in.id, code, out)
			}
			if st := state(in); st != outcome {
				t.Fatalf("resolved %s/%s is %q, want %q", tn, in.id, st, outcome)
			}
			before := effects(in)
			if code, _ := do("POST", "/v1/tenants/"+tn+"/intents/"+in.id+"/execute", agents[tn], ""); code != 200 && code != 409 {
				t.Fatalf("execute of resolved %s/%s: %d", tn, in.id, code)
			}
			if effects(in) != before {
				t.Fatalf("resolved %s/%s ran again", tn, in.id)
			}
			resolved++
		}
		if code, out := do("GET", "/v1/tenants/"+tn+"/intents?state=in_doubt", op, ""); code != 200 || strings.Contains(string(out), `"intent_id"`) {
			t.Fatalf("%s in doubt after resolving: %d %s", tn, code, out)
		}
		if got := kindCount(chainOf(t, do, tn, admin), "execution.resolved", ""); got != len(cut) {
			t.Fatalf("%s: %d execution.resolved records, want %d", tn, got, len(cut))
		}
	}
	// Every acknowledged kill switch change is in gamma's chain.
	seen := map[string]bool{}
	for _, r := range chainOf(t, do, "gamma", admin) {
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
