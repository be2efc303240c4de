#!/usr/bin/env bash
# The peak RSS (VmHWM) of the local environment's operator: the largest of its replicas' (the leader's;
# a follower only waits for the Lease). With an environment's dir as argument, only that environment's
# operators count (those whose KUBERNETES_SERVICE_PORT is its apiserver's port), for when two run side
# by side.
port=
if [ -n "${1:-}" ]; then
  port=$(sed -n 's#^ *server: https://[^:]*:\([0-9]*\).*#\1#p' "$1/kubeconfig" 2>/dev/null | head -n 1)
fi
best=0
for pid in $(pgrep -f 'archway operator' || true); do
  if [ -n "$port" ] && ! tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx "KUBERNETES_SERVICE_PORT=$port"; then
    continue
  fi
  kb=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
  [ "${kb:-0}" -gt "$best" ] && best=$kb
done
if [ "$best" -gt 0 ]; then echo "$best kB"; else echo "n/a (operator process not found)"; fi
