package app

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strconv"

	"github.com/exoarmur/exoarmur/internal/natsstore"
)

func runNATS(ctx context.Context, env Env, args []string) error {
	fs := newCommand(env, cmdHelp{Name: "nats", Args: "[--data-dir D] [--listen HOST:PORT] [--users FILE]",
		About:   "Runs a standalone NATS server with JetStream file storage under --data-dir, for several serve processes sharing one store (serve --nats-url).",
		Example: "nats --data-dir ./nats-data --listen 127.0.0.1:4222"})
	dataDir := fs.String("data-dir", "./data-nats", "JetStream storage directory")
	listen := fs.String("listen", "127.0.0.1:4222", "client listen address (loopback)")
	sync := fs.String("sync", "default", `"default" or "always" (fsync every write)`)
	debug := fs.Bool("debug", false, "log NATS server output")
	usersFile := fs.String("users", "", `JSON file of logins: [{"user","password","admin"|"tenants":[...],"global"}]; node users are confined to their tenants' subjects and may not create or change streams (open the store as an admin user first)`)
	if _, err := fs.parse(args); err != nil {
		return err
	}
	host, portStr, err := net.SplitHostPort(*listen)
	if err != nil {
		return fmt.Errorf("%w: --listen %q: must be host:port", errUsage, *listen)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return fmt.Errorf("%w: --listen %q: bad port", errUsage, *listen)
	}
	if *sync != "default" && *sync != "always" {
		return fmt.Errorf(`%w: --sync %q: must be "default" or "always"`, errUsage, *sync)
	}
	var users []natsstore.User
	if *usersFile != "" {
		raw, err := os.ReadFile(*usersFile)
		if err != nil {
			return fmt.Errorf("%w: --users: %v", errUsage, err)
		}
		if err := json.Unmarshal(raw, &users); err != nil {
			return fmt.Errorf("%w: --users %s: %v", errUsage, *usersFile, err)
		}
	}
	srv, err := natsstore.StartServer(natsstore.ServerConfig{DataDir: *dataDir, Host: host, Port: port, SyncAlways: *sync == "always", Debug: *debug, Users: users,
		Logger: newLogger(env, "text")})
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "exoarmur nats: listening on %s, JetStream data in %s\n", srv.ClientURL(), *dataDir)
	<-ctx.Done()
	srv.Shutdown()
	fmt.Fprintln(env.Stdout, "exoarmur nats: stopped")
	return nil
}
