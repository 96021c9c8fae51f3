package app

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// actionsFile writes an actions file declaring tickets.create, whose
// bearer secret is read from secretFile.
func actionsFile(t *testing.T, dir, url, secretFile string) string {
	t.Helper()
	p := filepath.Join(dir, "actions.yaml")
	data := `actions:
  tickets.create:
    class: A2
    description: Create a ticket in the team tracker
    params:
      type: object
      required: [title]
      properties:
        title: {type: string, maxLength: 1000}
    http:
      method: POST
      url: "` + url + `/tickets"
      headers:
        Authorization: "Bearer {{secret \"TICKETS_TOKEN\"}}"
      body: '{"title": {{json .params.title}}}'
    secrets:
      TICKETS_TOKEN: {file: ` + secretFile + `}
`
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestCheckConfigActionsFile: check-config parses the actions file and
// loads its secrets as serve would: a good one is listed; a bad one, or a
// missing secret, fails naming the file, the action and the field, never
// the secret's value.
func TestCheckConfigActionsFile(t *testing.T) {
	dir := t.TempDir()
	const secret = "check-config-secret-value"
	secretFile := filepath.Join(dir, "token")
	os.WriteFile(secretFile, []byte(secret+"\n"), 0o600)
	good := actionsFile(t, dir, "http://127.0.0.1:9", secretFile)
	base := []string{"check-config", "--data-dir", filepath.Join(dir, "data"), "--listen", "127.0.0.1:0"}

	code, stdout, stderr := run(append(base, "--actions-file", good)...)
	if code != 0 || !strings.Contains(stdout, "actions file "+good+": 1 declared actions (tickets.create), their secrets set") {
		t.Fatalf("good file: exit %d\n%s%s", code, stdout, stderr)
	}

	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("actions:\n  tickets.create: {class: A5}\n"), 0o600)
	code, stdout, stderr = run(append(base, "--actions-file", bad)...)
	if code != 2 || !strings.Contains(stderr, `--actions-file: actions file `+bad+`: action "tickets.create": invalid action registration: class: "A5" is not one of A0, A1, A2, A3`) {
		t.Fatalf("bad file: exit %d\n%s%s", code, stdout, stderr)
	}

	os.Remove(secretFile)
	code, stdout, stderr = run(append(base, "--actions-file", good)...)
	if code != 2 || !strings.Contains(stderr, `secrets.TICKETS_TOKEN: file `+secretFile+`: no such file or directory`) {
		t.Fatalf("missing secret: exit %d\n%s%s", code, stdout, stderr)
	}
	os.WriteFile(secretFile, []byte("short\n"), 0o600)
	code, stdout, stderr = run(append(base, "--actions-file", good)...)
	if code != 2 || !strings.Contains(stderr, `the value is shorter than 8 bytes`) || strings.Contains(stdout+stderr, "short\n") {
		t.Fatalf("short secret: exit %d\n%s%s", code, stdout, stderr)
	}
	code, _, stderr = run(append(base, "--actions-file", filepath.Join(dir, "none.yaml"))...)
	if code != 2 || !strings.Contains(stderr, "none.yaml") {
		t.Fatalf("no file: exit %d\n%s", code, stderr)
	}
	// replay takes the file too, without reading its secrets.
	code, _, stderr = run("replay", "--from-export", filepath.Join(dir, "none.jsonl"), "--actions-file", bad)
	if code != 2 || !strings.Contains(stderr, `class: "A5"`) {
		t.Fatalf("replay with a bad actions file: exit %d\n%s", code, stderr)
	}
}
