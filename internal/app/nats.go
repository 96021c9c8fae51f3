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
	fs := newCommand(env, cmdHelp{Name: "nats", Args: "[--data-dir D] [--listen HOST:PORT] [--users FILE] [--name N --cluster-listen HOST:PORT --routes URL,...]",
		About: "Runs a standalone NATS server with JetStream file storage under --data-dir, for several serve processes sharing one store (serve --nats-url). " +
			"With --cluster-listen and --routes it is a member of a JetStream cluster: three such processes, each naming the other two's route URLs, form one.",
		Example: "nats --data-dir ./n1 --listen 127.0.0.1:4222 --name n1 --cluster-listen 127.0.0.1:6222 --routes nats-route://127.0.0.1:6223,nats-route://127.0.0.1:6224"})
	dataDir := fs.String("data-dir", "./data-nats", "JetStream storage directory")
	listen := fs.String("listen", "127.0.0.1:4222", "client listen address (loopback)")
	sync := fs.String("sync", "default", `"default" or "always" (fsync every write)`)
	debug := fs.Bool("debug", false, "log NATS server output")
	usersFile := fs.String("users", "", `JSON file of logins: [{"user","password","admin"|"tenants":[...],"global"}]; node users are confined to their tenants' subjects and may not create or change streams (open the store as an admin user first)`)
	name := fs.String("name", "", "this server's name, unique in its cluster (default exoarmur)")
	clusterName := fs.String("cluster-name", "exoarmur", "the cluster's name, the same on every member")
	clusterListen := fs.String("cluster-listen", "", "listen for cluster routes on this loopback HOST:PORT (makes this server a cluster member)")
	var routes stringList
	fs.Var(&routes, "routes", "the other members' route URLs, nats-route://HOST:PORT (comma separated or repeated)")
	if _, err := fs.parse(args); err != nil {
		return err
	}
	var cluster natsstore.Cluster
	switch {
	case *clusterListen == "" && len(routes) > 0:
		return fs.usageErr("--routes: needs --cluster-listen (this member's own route address)")
	case *clusterListen != "":
		h, p, err := net.SplitHostPort(*clusterListen)
		port, perr := strconv.Atoi(p)
		if err != nil || perr != nil || port < 1 || port > 65535 {
			return fs.usageErr("--cluster-listen %q: must be host:port", *clusterListen)
		}
		if *name == "" {
			return fs.usageErr("--name: required for a cluster member (unique in the cluster)")
		}
		cluster = natsstore.Cluster{Name: *clusterName, Host: h, Port: port, Routes: routes}
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
		Logger: newLogger(env, "text"), Name: *name, Cluster: cluster})
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "exoarmur nats: listening on %s, JetStream data in %s\n", srv.ClientURL(), *dataDir)
	if cluster.Port != 0 {
		fmt.Fprintf(env.Stdout, "exoarmur nats: member %s of cluster %s, routes on %s, to %v\n", *name, cluster.Name, *clusterListen, []string(routes))
	}
	<-ctx.Done()
	srv.Shutdown()
	fmt.Fprintln(env.Stdout, "exoarmur nats: stopped")
	return nil
}
