// Command exoarmur-lab holds ExoArmur's evidence and load tools (the
// cold-reviewer run, the load harness, serve with an evidence clock, seeded
// keys), kept out of the production binary cmd/exoarmur. See README.md.
package main

import "github.com/exoarmur/exoarmur/internal/lab"

func main() { lab.Run() }
