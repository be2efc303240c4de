#!/usr/bin/env bash
# Starts the local environment in the background (archway-testenv up) and waits until it is ready.
# ARCHWAY_TESTENV_ARGS adds arguments to `archway-testenv up`, split on spaces (e.g. "--extra-nodes 100").
set -euo pipefail
dir=${1:-.dev}
read -r -a extra_args <<<"${ARCHWAY_TESTENV_ARGS:-}"
mkdir -p "$dir"
pidfile="$dir/testenv.pid"
if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null && [ -f "$dir/ready" ]; then
  echo "local environment already up (pid $(cat "$pidfile")); 'make dev-down' stops it"
  exit 0
fi
rm -f "$dir/ready"
nohup target/debug/archway-testenv up --dir "$dir" "${extra_args[@]}" >"$dir/testenv.log" 2>&1 &
pid=$!
echo "starting the local environment (log: $dir/testenv.log) ..."
for _ in $(seq 1 600); do
  [ -f "$dir/ready" ] && { echo "local environment up; run: source $dir/env.sh"; exit 0; }
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "archway-testenv exited before it was ready; last lines of $dir/testenv.log:" >&2
    tail -n 40 "$dir/testenv.log" >&2
    exit 1
  fi
  sleep 1
done
echo "timed out after 600 s waiting for the local environment; see $dir/testenv.log" >&2
exit 1
