// Command exoarmur is the ExoArmur governance gateway. See README.md.
package main

import "github.com/exoarmur/exoarmur/internal/app"

func main() { app.Run() }
