#!/usr/bin/env bash
# The pids of the local environment's operator replicas (host processes run by the hostlet). With an
# environment's dir as argument, only that environment's (those whose KUBERNETES_SERVICE_PORT is its
# apiserver's port), for when two run side by side.
port=
if [ -n "${1:-}" ]; then
  port=$(sed -n 's#^ *server: https://[^:]*:\([0-9]*\).*#\1#p' "$1/kubeconfig" 2>/dev/null | head -n 1)
fi
for pid in $(pgrep -f 'archway operator' || true); do
  if [ -n "$port" ] && ! tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx "KUBERNETES_SERVICE_PORT=$port"; then
    continue
  fi
  echo "$pid"
done
