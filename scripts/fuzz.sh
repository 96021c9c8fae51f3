#!/usr/bin/env bash
# Runs every fuzz target for a bounded time and keeps the corpus it grew in
# the package's testdata/fuzz/<target>/, so plain `go test` replays it on
# every run. Usage: scripts/fuzz.sh [fuzztime] (default 20s).
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime="${1:-20s}"
module="$(go list -m)"
cache="$(go env GOCACHE)/fuzz"
targets=(
  internal/contract:FuzzDecodeIntentRequest
  internal/contract:FuzzDecodeRequestBodies
  internal/contract:FuzzCanonical
  internal/contract:FuzzCanonicalReference
  internal/contract:FuzzAuditRecordAppendCanonical
  internal/tenant:FuzzTenantParse
  internal/contract:FuzzCheckIntentText
  internal/executor:FuzzSandboxPath
  internal/executor:FuzzInternalAddress
  internal/replay:FuzzReplayLine
  internal/auth:FuzzParseKey
  internal/policy:FuzzURLHost
)
for t in "${targets[@]}"; do
  pkg="${t%%:*}" name="${t##*:}"
  echo "== $pkg $name ($fuzztime)"
  go test -run='^$' -fuzz="^${name}\$" -fuzztime="$fuzztime" "./$pkg/"
  src="$cache/$module/$pkg/$name"
  dst="$pkg/testdata/fuzz/$name"
  if [ -d "$src" ]; then
    mkdir -p "$dst"
    cp -n "$src"/* "$dst"/ 2>/dev/null || true
    echo "   corpus kept: $(ls "$dst" | wc -l) files in $dst"
  fi
done
