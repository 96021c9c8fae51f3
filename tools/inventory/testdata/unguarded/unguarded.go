// Package unguarded is a fixture: a side effect outside every allowed place,
// which the inventory must report as a violation.
package unguarded

import "os"

// Leak writes a file without any gate.
func Leak() error { return os.WriteFile("/tmp/exoarmur-unguarded", []byte("x"), 0o600) }
