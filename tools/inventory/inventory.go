// Command inventory lists every execution path of ExoArmur and every call
// that causes a side effect outside the process, from the Go source (go/packages,
// go/ast, go/types), and writes docs/design/00_execution_surface.md.
//
//	go run ./tools/inventory            # regenerate the file
//	go run ./tools/inventory -check     # exit 1 if it is stale or a violation exists
//
// Side-effect calls are found by type (file writes, process execution,
// outbound HTTP, NATS publishes, KV and stream writes). Each must sit in an
// allowed place (the gate-guarded executors, the store adapter, which
// writes NATS on the domain packages' call, the approvals' webhook, the
// operator CLI, the evidence tools); anything else is a violation. Execution paths
// (HTTP routes, CLI commands, executors, goroutines, replay) are classified
// by what they can reach on a conservative call graph (calls, function
// references, and every implementation of a called interface method), and
// an entry that can reach an executor without passing (*gate.Gate).Execute
// is a violation.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

const outFile = "docs/design/00_execution_surface.md"

func main() {
	check := flag.Bool("check", false, "compare with the committed file instead of writing it; exit 1 if stale or violated")
	root := flag.String("root", ".", "repository root")
	flag.Parse()
	if err := run(*root, *check); err != nil {
		fmt.Fprintln(os.Stderr, "inventory:", err)
		os.Exit(1)
	}
}

func run(root string, check bool) error {
	inv, err := Analyze(root, "./...")
	if err != nil {
		return err
	}
	doc := inv.Markdown()
	path := filepath.Join(root, outFile)
	if check {
		old, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if !bytes.Equal(old, doc) {
			return fmt.Errorf("%s is stale: run go run ./tools/inventory", outFile)
		}
	} else if err := os.WriteFile(path, doc, 0o644); err != nil {
		return err
	}
	if len(inv.Violations) > 0 {
		return errors.New("violations:\n  " + strings.Join(inv.Violations, "\n  "))
	}
	return nil
}
