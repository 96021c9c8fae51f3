#!/usr/bin/env bash
# Make a Docker engine available the way this project's machines allow:
# Debian's docker.io and docker-compose, and dockerd without a bridge or
# iptables (every service uses the host network on 127.0.0.1). Fails loudly
# when Docker cannot start: no silent skips.
set -euo pipefail
if docker info >/dev/null 2>&1 && command -v docker-compose >/dev/null; then
  echo "docker: engine already running"
  exit 0
fi
if ! command -v dockerd >/dev/null || ! command -v docker-compose >/dev/null; then
  echo "docker: installing docker.io and docker-compose"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq docker.io docker-compose >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
  # A stale pid file from a killed daemon stops dockerd from starting.
  if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
    rm -f /var/run/docker.pid
  fi
  echo "docker: starting dockerd --bridge=none --iptables=false --ip6tables=false"
  nohup dockerd --bridge=none --iptables=false --ip6tables=false >/tmp/exoarmur-dockerd.log 2>&1 &
  echo $! > /tmp/exoarmur-dockerd.pid
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
fi
if ! docker info >/dev/null 2>&1; then
  echo "docker: the engine did not start; dockerd log follows" >&2
  tail -n 40 /tmp/exoarmur-dockerd.log >&2 || true
  exit 1
fi
echo "docker: engine ready ($(docker version --format '{{.Server.Version}}'))"
