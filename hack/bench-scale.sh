#!/usr/bin/env bash
# The operator at scale (make bench-scale), on a local environment of its own (default dir .dev-scale,
# brought up with --extra-nodes and torn down at the end; one that already runs there is used as it
# is and left up). N MultiArchBuilds: most wait (linux/riscv64, placement native, no such node), some
# build for real (a RUN-less Dockerfile, linux/amd64 and linux/arm64). Then idle, heartbeats and node
# label changes. Prints one markdown table with the goals of issue 9 beside the figures; asserts
# nothing. API requests are counted in the apiserver's audit log, which records the operator's
# ServiceAccount only; leader-election Lease requests are counted apart.
#
#   BENCH_SCALE_BUILDS        builds in all (1000)
#   BENCH_SCALE_REAL_BUILDS   of which build for real (50)
#   BENCH_SCALE_EXTRA_NODES   extra nodes of a new environment (100)
#   BENCH_SCALE_IDLE_SECONDS  the idle window (60)
#   BENCH_SCALE_TIMEOUT       seconds the real builds may take to be Ready (1800)
#   BENCH_SCALE_PROFILE       the operator's cargo profile: release (default, as its image is built) or dev
#   BENCH_SCALE_KEEP=1        leave the environment up afterwards
set -euo pipefail
dir=${1:-.dev-scale}
n=${BENCH_SCALE_BUILDS:-1000}
real=${BENCH_SCALE_REAL_BUILDS:-50}
extra=${BENCH_SCALE_EXTRA_NODES:-100}
idle=${BENCH_SCALE_IDLE_SECONDS:-60}
timeout=${BENCH_SCALE_TIMEOUT:-1800}
burst=5
[ "$real" -le "$n" ] || { echo "BENCH_SCALE_REAL_BUILDS ($real) > BENCH_SCALE_BUILDS ($n)" >&2; exit 1; }
waiting=$((n - real))
started=$(date +%s)

profile=${BENCH_SCALE_PROFILE:-release}
case "$profile" in
  release) cargo build -q --release --bin archway; operator_bin=$PWD/target/release/archway ;;
  dev) operator_bin=$PWD/target/debug/archway ;;
  *) echo "BENCH_SCALE_PROFILE must be release or dev, not $profile" >&2; exit 1 ;;
esac

ours=
if ! { [ -f "$dir/ready" ] && [ -f "$dir/testenv.pid" ] && kill -0 "$(cat "$dir/testenv.pid")" 2>/dev/null; }; then
  ARCHWAY_TESTENV_ARGS="--extra-nodes $extra --archway-bin $operator_bin ${ARCHWAY_TESTENV_ARGS:-}" hack/dev-up.sh "$dir" >&2
  ours=1
fi
# shellcheck source=/dev/null
source "$dir/env.sh"
audit="$dir/logs/audit.log"
run="scale-$(date +%s)"
work=$(mktemp -d)
cleanup() {
  kubectl delete mab -l "archway.dev/bench=$run" --wait=false >/dev/null 2>&1 || true
  kubectl delete configmap "$run-context" --ignore-not-found >/dev/null 2>&1 || true
  kubectl label node -l "archway.dev/bench-poke" archway.dev/bench-poke- >/dev/null 2>&1 || true
  rm -rf "$work"
  if [ -n "$ours" ] && [ -z "${BENCH_SCALE_KEEP:-}" ]; then hack/dev-down.sh "$dir" >&2 || true; fi
}
trap cleanup EXIT
say() { echo "[bench-scale $(($(date +%s) - started)) s] $*" >&2; }

leader() { kubectl -n archway-system get lease archway-operator -o jsonpath='{.spec.holderIdentity}' 2>/dev/null; }
# Every operator replica's /metrics (on its pod IP, a loopback address here) into $1.<pod>: a
# replica that loses the Lease restarts, and its counters with it; the figures add up each replica's
# increase (from 0 after a restart). The standby reconciles nothing.
scrape() {
  local pod ip
  rm -f "$1".* "$1.tmp"
  while read -r pod ip; do
    if [ -n "$ip" ] && curl -sf --noproxy '*' "http://$ip:8080/metrics" >"$1.tmp"; then mv "$1.tmp" "$1.$pod"; fi
  done < <(kubectl -n archway-system get pods -l app.kubernetes.io/name=archway \
    -o jsonpath='{range .items[*]}{.metadata.name} {.status.podIP}{"\n"}{end}')
  rm -f "$1.tmp"
  echo "${1##*/} $(leader)" >>"${1%/*}/leaders"
  compgen -G "$1.*" >/dev/null
}
lines() { wc -l <"$audit"; }
# The machine's CPU time so far (/proc/stat's first line: user, nice, system, idle, iowait, ... in
# ticks) into $1.
cpu() { head -n 1 /proc/stat >"$1"; }
# The audit log's requests in lines ($1, $2] as JSON: total and writes (Lease apart), Lease, by verb
# and by verb and resource, and the apiserver's own time for each status write (received -> answered).
requests() {
  sed -n "$(($1 + 1)),$2p" "$audit" | python3 -c '
import json, sys
from datetime import datetime
rs = [json.loads(l) for l in sys.stdin if l.strip()]
t = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
status = [t(r["stageTimestamp"]) - t(r["requestReceivedTimestamp"]) for r in rs
          if r.get("objectRef", {}).get("subresource") == "status" and r["verb"] == "patch"]
lease = [r for r in rs if r.get("objectRef", {}).get("resource") == "leases"]
rest = [r for r in rs if r.get("objectRef", {}).get("resource") != "leases"]
writes = [r for r in rest if r["verb"] in ("create", "update", "patch", "delete", "deletecollection")]
by = {}
for r in rest:
    o = r.get("objectRef", {})
    key = r["verb"] + " " + o.get("resource", "?") + ("/" + o["subresource"] if o.get("subresource") else "")
    by[key] = by.get(key, 0) + 1
print(json.dumps({"total": len(rest), "writes": len(writes), "lease": len(lease), "by": by, "status_seconds": status}))'
}
# Builds of this run whose .status.phase is $1 (or the platform phase with $2).
count_phase() {
  kubectl get mab -l "archway.dev/bench=$run,archway.dev/bench-kind=$1" \
    -o jsonpath='{range .items[*]}{.status.phase}/{.status.platforms[0].phase}{"\n"}{end}' | grep -c -E "$2" || true
}

until [ -n "$(leader)" ] && scrape "$work/m0"; do sleep 1; done
holder0=$(leader)
nodes=$(kubectl get nodes -o name | wc -l)
extras=$(kubectl get nodes -o name | grep -c '^node/extra-' || true)
say "environment $dir: $nodes nodes ($extras extra), operator leader $holder0"

# A RUN-less variant of the blog's context: nothing runs under qemu, each build's image is its own.
# Every build names `builder: {kind: buildah}`: `auto` would assemble this Dockerfile, on any node, and
# no build would wait; the figures stay comparable with the runs before assemble existed.
mkdir "$work/context"
cp examples/blog/context/index.html "$work/context/"
cat >"$work/context/Dockerfile" <<'DOCKERFILE'
ARG BASE_IMAGE=busybox:latest
FROM ${BASE_IMAGE}
ARG BENCH_BUILD=none
LABEL dev.archway.bench.build=${BENCH_BUILD}
COPY index.html /srv/
DOCKERFILE
kubectl create configmap "$run-context" --from-file="$work/context" >/dev/null

# 1. The waiting builds.
a0=$(lines)
t0=$(date +%s.%N)
for i in $(seq 1 "$waiting"); do
  cat <<YAML
---
apiVersion: archway.dev/v1alpha1
kind: MultiArchBuild
metadata: {name: $run-w$i, labels: {archway.dev/bench: $run, archway.dev/bench-kind: waiting}}
spec:
  source: {configMap: {name: $run-context}}
  platforms: [linux/riscv64]
  placement: native
  builder: {kind: buildah}
  output: {image: $ARCHWAY_REGISTRY/bench-scale/waiting, pushSecret: {name: registry-credentials}}
YAML
done | kubectl create -f - >/dev/null
until [ "$(count_phase waiting '/Waiting$')" -ge "$waiting" ]; do sleep 2; done
t1=$(date +%s.%N)
sleep 5
a1=$(lines)
scrape "$work/m1"
cpu "$work/c1"
say "$waiting builds wait ($(awk "BEGIN {printf \"%.0f\", $t1 - $t0}") s)"

# 2. The builds that build, each to a repository of its own.
for i in $(seq 1 "$real"); do
  cat <<YAML
---
apiVersion: archway.dev/v1alpha1
kind: MultiArchBuild
metadata: {name: $run-b$i, labels: {archway.dev/bench: $run, archway.dev/bench-kind: real}}
spec:
  source: {configMap: {name: $run-context}}
  platforms: [linux/amd64, linux/arm64]
  builder: {kind: buildah}
  buildArgs: {BASE_IMAGE: $ARCHWAY_REGISTRY/library/busybox:latest, BENCH_BUILD: $run-b$i}
  output: {image: $ARCHWAY_REGISTRY/bench-scale/$run-b$i, tags: [bench], pushSecret: {name: registry-credentials}}
YAML
done | kubectl create -f - >/dev/null
# The burst: the 50 builds' Jobs and pods created, scheduled and started at once.
sleep "$burst"
scrape "$work/m1b"
cpu "$work/c1b"
deadline=$(($(date +%s) + timeout))
until [ "$(count_phase real '^(Ready|Failed)/')" -ge "$real" ] || [ "$(date +%s)" -gt "$deadline" ]; do sleep 2; done
t2=$(date +%s.%N)
ready=$(count_phase real '^Ready/')
sleep 5
a2=$(lines)
scrape "$work/m2"
cpu "$work/c2"
say "$real builds: $ready Ready ($(awk "BEGIN {printf \"%.0f\", $t2 - $t1}") s)"

# 3. Idle: nothing changes but the hostlet's heartbeats (node status every 20 s, node Lease every 10 s).
sleep 10
a3=$(lines)
scrape "$work/m3"
sleep "$idle"
a4=$(lines)
scrape "$work/m4"
say "idle for $idle s"

# 4. Ten label changes, each on another node (extra ones when there are any): any label counts for
# placement (NodeFingerprints).
mapfile -t poke < <(kubectl get nodes -o name | sed 's#^node/##' | grep '^extra-' | head -n 10)
[ "${#poke[@]}" -eq 10 ] || mapfile -t poke < <(for _ in $(seq 1 10); do echo x86-1; done)
for i in "${!poke[@]}"; do
  kubectl label node "${poke[$i]}" "archway.dev/bench-poke=$run-$i" --overwrite >/dev/null
  sleep 1
done
sleep 10
a5=$(lines)
scrape "$work/m5"
say "10 label changes"

rss=$(hack/lib/operator-rss.sh "$dir")
holder1=$(leader)
requests "$a0" "$a1" >"$work/r-waiting"
requests "$a1" "$a2" >"$work/r-real"
requests "$a3" "$a4" >"$work/r-idle"
requests "$a4" "$a5" >"$work/r-labels"
# Build pods done (the hostlet's log) and index manifests pushed (the registry's log), for the builds
# that built.
sed 's/\x1b\[[0-9;]*m//g' "$dir/testenv.log" | grep -F "pod done pod=\"default/$run-b" >"$work/pods-done" || true
grep -F 'msg="response completed"' "$dir/logs/registry.log" | grep -F "/v2/bench-scale/$run-b" |
  grep -F 'http.request.method=PUT' | grep -F 'image.index' >"$work/index-puts" || true

python3 - "$work" "$run" "$n" "$waiting" "$real" "$ready" "$nodes" "$extras" "$idle" "$t0" "$t1" "$t2" \
  "$rss" "$holder0" "$holder1" "$(($(date +%s) - started))" "$profile" "$burst" <<'PY'
import json, os, re, sys
from datetime import datetime
work, run = sys.argv[1], sys.argv[2]
n, waiting, real, ready, nodes, extras, idle = map(int, sys.argv[3:10])
t0, t1, t2 = map(float, sys.argv[10:13])
rss, holder0, holder1, took, profile = sys.argv[13], sys.argv[14], sys.argv[15], int(sys.argv[16]), sys.argv[17]
burst = int(sys.argv[18])

def parse(path):
    """reconciles, duration sum, and per value of the histogram's `registry` label its [(le, count)]."""
    out = {"reconciles": 0.0, "sum": 0.0, "buckets": {}, "phases": {}}
    for line in open(path):
        mm = re.match(r'archway_reconcile_phase_duration_seconds_(bucket|sum)\{([^}]*)\} (\S+)', line)
        if mm:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', mm.group(2)))
            phase = out["phases"].setdefault(labels["phase"], {"sum": 0.0, "buckets": []})
            if mm.group(1) == "sum":
                phase["sum"] = float(mm.group(3))
            else:
                phase["buckets"].append((float(labels["le"]), float(mm.group(3))))
            continue
        if line.startswith("archway_reconciles_total "):
            out["reconciles"] = float(line.split()[1])
        mm = re.match(r'archway_reconcile_duration_seconds_(bucket|sum)\{?([^} ]*)\}? (\S+)', line)
        if mm:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', mm.group(2)))
            if mm.group(1) == "sum":
                out["sum"] += float(mm.group(3))
            else:
                out["buckets"].setdefault(labels.get("registry", ""), []).append((float(labels["le"]), float(mm.group(3))))
    return out
# Per scrape, per replica (pod).
m = {k: {p.split(".", 1)[1]: parse(f"{work}/{p}") for p in os.listdir(work) if p.startswith(k + ".")} for k in ("m0", "m1", "m1b", "m2", "m3", "m4", "m5")}
restarted = set()
def add(total, more):
    """Two bucket lists [(le, count)] added; an empty one (a replica without the series) adds nothing."""
    return total if not more else more if not total else [(le, c + d) for (le, c), (_, d) in zip(total, more)]
def delta(a, b, series):
    """Each replica's increase of a histogram from scrape a to scrape b, from zero when it restarted in
    between, summed: (count, sum, [(le, count)]); `series` picks (count, sum, [(le, count)]) of a scrape."""
    total, secs, buckets = 0.0, 0.0, []
    for pod, end in m[b].items():
        e, s = series(end), series(m[a][pod]) if pod in m[a] else None
        if s is None or e[0] < s[0] or e[1] < s[1]:
            if s is not None:
                restarted.add(pod)
            s = (0.0, 0.0, [])
        total, secs = total + e[0] - s[0], secs + e[1] - s[1]
        buckets = add(buckets, [(le, c - (s[2][i][1] if s[2] else 0.0)) for i, (le, c) in enumerate(e[2])])
    # A replica scraped before but not now (its process restarting) lost what it counted since.
    restarted.update(pod for pod in m[a] if pod not in m[b])
    return total, secs, buckets
def increase(a, b, registry=None):
    """The reconciles from scrape a to b: (count, duration sum, [(le, count)] of those whose `registry`
    label is `registry`, or of all)."""
    def series(scrape):
        lists = [v for k, v in scrape["buckets"].items() if registry is None or k == registry]
        buckets = [(le, sum(l[i][1] for l in lists)) for i, (le, _) in enumerate(lists[0])] if lists else []
        return scrape["reconciles"], scrape["sum"], buckets
    return delta(a, b, series)
reconciles = lambda a, b: int(increase(a, b)[0])
r = {k: json.load(open(f"{work}/r-{k}")) for k in ("waiting", "real", "idle", "labels")}
def phase_increase(phase, a="m0", b="m5"):
    """(sum, [(le, count)]) of one reconcile phase's histogram from scrape a to b, over the replicas."""
    def series(scrape):
        p = scrape["phases"].get(phase, {"sum": 0.0, "buckets": []})
        return (p["buckets"][-1][1] if p["buckets"] else 0.0), p["sum"], p["buckets"]
    return delta(a, b, series)[1:]

def quantile(q, a="m0", b="m5", registry=None, buckets=None):
    """Bucket-interpolated, like PromQL's histogram_quantile, over the reconciles between a and b."""
    buckets = increase(a, b, registry)[2] if buckets is None else buckets
    total = buckets[-1][1] if buckets else 0
    if total <= 0:
        return float("nan"), 0
    rank, lower, below = q * total, 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return lower, total
            return lower + (le - lower) * (rank - below) / max(count - below, 1e-9), total
        lower, below = le, count
    return lower, total

# Pod finished -> index pushed, per build that built: the last of its pods' "pod done" (the hostlet
# wrote Succeeded) to the first index PUT to its repository after it.
def ts(s):
    s = s.rstrip("Z")
    head, _, frac = s.partition(".")
    return datetime.fromisoformat(head + "+00:00").timestamp() + float("0." + (frac or "0"))
done = {}
for line in open(f"{work}/pods-done"):
    mm = re.search(rf'pod="default/({re.escape(run)}-b\d+)-linux-', line)
    if mm:
        done[mm.group(1)] = max(done.get(mm.group(1), 0), ts(line.split()[0]))
puts = {}
for line in open(f"{work}/index-puts"):
    mm = re.search(rf'time="([^"]+)".*/v2/bench-scale/({re.escape(run)}-b\d+)/manifests/', line)
    if mm:
        puts.setdefault(mm.group(2), []).append(ts(mm.group(1)))
lags = sorted(min(p for p in puts[b] if p >= t) - t for b, t in done.items() if any(p >= t for p in puts.get(b, [])))

p50, count = quantile(0.5)
mean = increase("m0", "m5")[1] / count if count else float("nan")
def bucket(x):
    bounds = [0.0] + [le for le, _ in increase("m0", "m5")[2]]
    for lo, hi in zip(bounds, bounds[1:]):
        if x <= hi:
            return f"{lo * 1000:g}-{hi * 1000:g} ms"
    return "+Inf"
p99, _ = quantile(0.99)
(p99_burst, burst_count), (p99_after, after_count) = quantile(0.99, "m1", "m1b"), quantile(0.99, "m1b", "m2")
p50_plan, plan_count = quantile(0.5, registry="false")
p99_plan, _ = quantile(0.99, registry="false")
p50_registry, registry_count = quantile(0.5, registry="true")
kb = int(rss.split()[0]) if rss.split()[0].isdigit() else None
heartbeats = nodes * idle // 20
# Events apart: they are the build's history for `kubectl describe`, not its state (the goal counts
# the Jobs and the status patches: one create and Pending, Building, Succeeded).
events = r["real"]["by"].get("create events", 0)
writes_per = (r["real"]["writes"] - events) / (2 * real) if real else float("nan")
yes = lambda ok: "yes" if ok else "**no**"
ms = lambda s: f"{s * 1000:.0f} ms"
rows = [
    (f"apply {n:,} builds: requests while {waiting:,} reach Waiting ({t1 - t0:.0f} s)",
     f"{r['waiting']['total']:,} ({r['waiting']['total'] / max(waiting, 1):.1f} per build; {reconciles('m0', 'm1'):,} reconciles)",
     "—", "—"),
    (f"... and while {real} build 2 platforms each to Ready ({ready} Ready, {t2 - t1:.0f} s)",
     f"{r['real']['total']:,} ({r['real']['total'] / max(real, 1):.1f} per build; {reconciles('m1', 'm2'):,} reconciles)",
     "—", "—"),
    (f"idle for {idle} s, requests per second",
     f"{r['idle']['total'] / idle:.2f}/s ({r['idle']['total']:,} requests, {r['idle']['lease']} on the leader Lease apart)",
     "0 per heartbeat", yes(r["idle"]["total"] == 0)),
    (f"the same {idle} s: {heartbeats:,} node heartbeats ({nodes} nodes every 20 s) and nothing else",
     f"{r['idle']['total']:,} requests, {reconciles('m3', 'm4'):,} reconciles",
     "0", yes(r["idle"]["total"] == 0 and reconciles("m3", "m4") == 0)),
    ("10 label changes, one on each of 10 nodes",
     f"{r['labels']['total']:,} requests, {reconciles('m4', 'm5'):,} reconciles",
     "—", "—"),
    (f"reconcile p50 / p99 ({count:,.0f} reconciles, bucket-interpolated)",
     f"{ms(p50)} / {ms(p99)} (p99 in the bucket {bucket(p99)}; mean {ms(mean)})", "p99 <= 50 ms", yes(p99 <= 0.05)),
    (f"... in the {burst} s after the {real} are applied at once / from then until they are Ready",
     f"{ms(p99_burst)} ({burst_count:,.0f} reconciles) / {ms(p99_after)} ({after_count:,.0f})", "—", "—"),
    (f"... of the {plan_count:,.0f} that call no registry / p50 of the {registry_count:,.0f} that publish",
     f"{ms(p50_plan)} / {ms(p99_plan)} / {ms(p50_registry)}", "—", "—"),
    (f"operator RSS (VmHWM) with {n:,} builds", f"{kb / 1024:.1f} MiB" if kb else rss,
     "<= 64 MiB", yes(kb is not None and kb <= 64 * 1024)),
    (f"last pod finished -> index pushed ({len(lags)} builds; hostlet and registry logs)",
     f"p50 {lags[len(lags) // 2]:.2f} s, max {lags[-1]:.2f} s" if lags else "n/a",
     "<= 1 s", yes(bool(lags) and lags[-1] <= 1.0)),
    (f"API writes per platform build, events apart ({2 * real} platform builds)",
     f"{writes_per:.1f} ({r['real']['writes'] - events:,} writes); with events {r['real']['writes'] / max(2 * real, 1):.1f} "
     f"({events:,} events)", "<= 4", yes(writes_per <= 4)),
]
print(f"| {n:,} builds ({waiting:,} waiting, {real} building), {nodes} nodes ({extras} extra), operator: {profile} build | measured | goal | met |")
print("|---|---|---|---|")
for row in rows:
    print("| " + " | ".join(row) + " |")
top = lambda by: ", ".join(f"{k} {v:,}" for k, v in sorted(by.items(), key=lambda kv: -kv[1])[:6]) or "none"
writes = {k: v for k, v in r["real"]["by"].items() if k.split()[0] in ("create", "update", "patch", "delete")}
print(f"\nrequests while {waiting:,} reach Waiting: {top(r['waiting']['by'])}")
print(f"writes while {real} build: {top(writes)}")
print(f"requests on label changes: {top(r['labels']['by'])}")
for window, label in (("waiting", f"while {waiting:,} reach Waiting"), ("real", f"while {real} build")):
    times = sorted(r[window]["status_seconds"])
    if times:
        print(f"the apiserver's own time for a status write {label} (audit log, received -> answered): "
              f"p50 {ms(times[len(times) // 2])}, p99 {ms(times[int(len(times) * 0.99)])}, max {ms(times[-1])}")
windows = {"m1": "applying the waiting builds", "m1b": "the real builds' first seconds", "m2": "the real builds", "m3": "settling after them",
           "m4": "the idle window", "m5": "the label changes"}
leaders = dict(line.split(" ", 1) for line in open(f"{work}/leaders").read().splitlines())
changes = [windows[k] for prev, k in zip(["m0"] + list(windows), list(windows)) if leaders.get(prev) != leaders.get(k)]
if changes:
    print(f"the leader changed during: {', '.join(changes)}")
def busy(a, b):
    """The machine's busy share of its CPU time from a to b (idle and iowait are not busy)."""
    (t0, i0), (t1, i1) = ((sum(v), v[3] + v[4]) for v in ([int(x) for x in open(f"{work}/{k}").read().split()[1:9]] for k in (a, b)))
    return 1 - (i1 - i0) / max(t1 - t0, 1)
print(f"the machine's CPU busy in the {burst} s after the {real} are applied: {busy('c1', 'c1b'):.0%}; "
      f"from then until they are Ready: {busy('c1b', 'c2'):.0%}")
phases = sorted({p for scrape in m["m5"].values() for p in scrape["phases"]})
def phase_figures(phase):
    secs, buckets = phase_increase(phase)
    (p50, total), (p99, _) = quantile(0.5, buckets=buckets), quantile(0.99, buckets=buckets)
    return f"{phase} {ms(p50)} / {ms(p99)} (n {total:,.0f}, {secs:.1f} s in all)"
print("reconcile phases, p50 / p99: " + "; ".join(phase_figures(p) for p in phases))
if holder0 != holder1 or restarted:
    print(f"the leader changed during the run ({holder0} -> {holder1}; restarted or not answering: "
          f"{', '.join(sorted(restarted)) or 'none'}): a restarted replica's reconciles between the last scrape and"
          " its restart are not counted, its RSS is that since its restart, and the new leader's start-up"
          " requests count in the window where it took over")
print(f"run took {took} s")
PY
