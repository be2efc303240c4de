#!/usr/bin/env bash
# The peak RSS (VmHWM) of the local environment's operator: the largest of its replicas' (the leader's;
# a follower only waits for the Lease). Takes an environment's dir as hack/lib/operator-pids.sh does.
best=0
for pid in $("$(dirname "$0")/operator-pids.sh" "$@"); do
  kb=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
  [ "${kb:-0}" -gt "$best" ] && best=$kb
done
if [ "$best" -gt 0 ]; then echo "$best kB"; else echo "n/a (operator process not found)"; fi
