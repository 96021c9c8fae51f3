#!/usr/bin/env bash
# Stop the dockerd that docker-up.sh started (if it started one).
set -u
if [ -f /tmp/exoarmur-dockerd.pid ]; then
  pid=$(cat /tmp/exoarmur-dockerd.pid)
  kill "$pid" 2>/dev/null && echo "docker: stopped dockerd ($pid)"
  for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  rm -f /tmp/exoarmur-dockerd.pid
fi
exit 0
