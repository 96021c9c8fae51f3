package checkpoint

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/exoarmur/exoarmur/internal/contract"
)

// Witness keeps a copy of each checkpoint outside the store.
type Witness interface {
	Witness(ctx context.Context, cp contract.Checkpoint) error
	String() string
}

// ParseWitness returns the witness target names: an http:// or https://
// URL (each checkpoint is POSTed to it as JSON) or a file path (each is
// appended to it as a line, and synced). A file must lie outside dataDir,
// so that the copy does not share the store's fate.
func ParseWitness(target, dataDir string) (Witness, error) {
	if strings.HasPrefix(target, "http://") || strings.HasPrefix(target, "https://") {
		u, err := url.Parse(target)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("witness %q: not a URL", target)
		}
		if u.User != nil {
			return nil, fmt.Errorf("witness %q: credentials in the URL would be logged; put the witness behind a path that needs none", u.Redacted())
		}
		return &httpWitness{url: u.String(), client: &http.Client{Timeout: witnessTimeout}}, nil
	}
	abs, err := filepath.Abs(target)
	if err != nil {
		return nil, fmt.Errorf("witness %q: %w", target, err)
	}
	if dataDir != "" {
		dd, err := filepath.Abs(dataDir)
		if err == nil {
			if rel, err := filepath.Rel(dd, abs); err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
				return nil, fmt.Errorf("witness file %s is inside the data dir %s: a copy there shares the store's fate; put it elsewhere", abs, dd)
			}
		}
	}
	if fi, err := os.Stat(filepath.Dir(abs)); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("witness file %s: its directory does not exist", abs)
	}
	return &fileWitness{path: abs}, nil
}

// witnessTimeout bounds one delivery to an HTTP witness.
const witnessTimeout = 5 * time.Second

type httpWitness struct {
	url    string
	client *http.Client
}

func (w *httpWitness) String() string { return w.url }

func (w *httpWitness) Witness(ctx context.Context, cp contract.Checkpoint) error {
	b, err := contract.Canonical(cp)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := w.client.Do(req)
	if err != nil {
		return fmt.Errorf("witness %s: %w", w.url, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("witness %s answered %s", w.url, resp.Status)
	}
	return nil
}

type fileWitness struct {
	mu   sync.Mutex
	path string
}

func (w *fileWitness) String() string { return w.path }

func (w *fileWitness) Witness(_ context.Context, cp contract.Checkpoint) error {
	b, err := contract.Canonical(cp)
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	f, err := os.OpenFile(w.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("witness: %w", err)
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("witness: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("witness: %w", err)
	}
	return f.Close()
}

// maxCheckpointLine bounds one line of a checkpoint file.
const maxCheckpointLine = 64 << 10

// ReadFile reads the checkpoints of a file: one checkpoint as JSON (what
// `exoarmur audit checkpoint` prints), or one per line (a witness file,
// an export's checkpoint lines among its records: lines that are not
// checkpoints are skipped). A malformed checkpoint line is an error
// naming its line.
func ReadFile(path string) ([]contract.Checkpoint, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("checkpoint file: %w", err)
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, 256<<20))
	if err != nil {
		return nil, fmt.Errorf("checkpoint file %s: %w", path, err)
	}
	if cp, err := contract.DecodeCheckpoint(bytes.TrimSpace(raw)); err == nil {
		return []contract.Checkpoint{cp}, nil
	}
	var out []contract.Checkpoint
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 0, 4096), 16<<20)
	line := 0
	for sc.Scan() {
		line++
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 || !bytes.Contains(b, []byte(`"type":"checkpoint"`)) || len(b) > maxCheckpointLine {
			continue
		}
		cp, err := contract.DecodeCheckpoint(b)
		if err != nil {
			return nil, fmt.Errorf("checkpoint file %s: line %d: %w", path, line, err)
		}
		out = append(out, cp)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("checkpoint file %s: %w", path, err)
	}
	if len(out) == 0 {
		return nil, errors.New("checkpoint file " + path + ": holds no checkpoint")
	}
	return out, nil
}

// Latest returns the checkpoint of the highest sequence per tenant.
func Latest(cps []contract.Checkpoint) map[string]contract.Checkpoint {
	out := map[string]contract.Checkpoint{}
	for _, cp := range cps {
		if have, ok := out[cp.Tenant]; !ok || cp.Seq > have.Seq {
			out[cp.Tenant] = cp
		}
	}
	return out
}
