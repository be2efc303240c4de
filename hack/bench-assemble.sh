#!/usr/bin/env bash
# The blog's COPY-only variant (examples/blog-static) for four platforms, assembled and built with buildah,
# in one run on the local environment (part of make bench): time from apply to Ready, and the bytes each
# pushed to the registry (from the registry's log: each completed blob upload and manifest push, sized by
# what the registry stored under its digest), against the least a publish needs: the new layer once, each
# platform's config and manifest, and the index. Prints figures and ratios; asserts nothing.
set -euo pipefail
dir=${1:-.dev}
# shellcheck source=/dev/null
source "$dir/env.sh"
run="bench-$(date +%s)"
log="$dir/logs/registry.log"
storage="$dir/registry/docker/registry/v2"
# A file unique to this run, so that no layer of an earlier run is found in the registry.
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp examples/blog-static/context/* "$context/"
echo "$run" > "$context/run.txt"
sed -i 's#^COPY index.html /srv/$#COPY index.html run.txt /srv/#' "$context/Dockerfile"
# A ConfigMap of this run's own: a build of another run that names it would build again.
kubectl create configmap "$run-context" --from-file="$context" >/dev/null

# Applies the example as `$1` with builder kind `$2`; prints "seconds first-log-line last-log-line".
build() {
  local name=$1 kind=$2 from start end
  from=$(wc -l <"$log")
  start=$(date +%s.%N)
  sed -e "s#registry.example.com#$ARCHWAY_REGISTRY#g" -e "s/^  name: blog-static$/  name: $name/" \
      -e "s#asksven/blog-static#bench/$name#" -e "s/name: blog-static-context/name: $run-context/" -e "s/^  output:$/  builder: {kind: $kind}\n  output:/" \
      examples/blog-static/multiarchbuild.yaml | kubectl apply -f - >/dev/null
  kubectl wait --for=condition=Ready "mab/$name" --timeout=900s >/dev/null
  end=$(date +%s.%N)
  echo "$(python3 -c "print(f'{$end - $start:.1f}')") $from $(wc -l <"$log")"
}

read -r assemble_s assemble_from assemble_to < <(build "$run-assemble" assemble)
read -r buildah_s buildah_from buildah_to < <(build "$run-buildah" buildah)
index=$(kubectl get mab "$run-assemble" -o jsonpath='{.status.image}')
python3 - "$log" "$storage" "$index" "$assemble_s" "$assemble_from" "$assemble_to" "$buildah_s" "$buildah_from" "$buildah_to" <<'EOF'
import json, os, re, sys, urllib.parse
log, storage, index = sys.argv[1], sys.argv[2], sys.argv[3]
runs = {"assemble": sys.argv[4:7], "buildah": sys.argv[7:10]}
lines = open(log, errors="replace").read().splitlines()

def size(digest):
    path = os.path.join(storage, "blobs", "sha256", digest[7:9], digest[7:], "data")
    return os.path.getsize(path) if os.path.exists(path) else 0

def read(digest):
    with open(os.path.join(storage, "blobs", "sha256", digest[7:9], digest[7:], "data")) as f:
        return json.load(f)

def tag_digest(repo, tag):
    with open(os.path.join(storage, "repositories", repo, "_manifests", "tags", tag, "current", "link")) as f:
        return f.read().strip()

def pushed(first, last):
    """Bytes of the completed blob uploads and manifest pushes logged between two line numbers."""
    total = 0
    for line in lines[first:last]:
        if "response completed" not in line or "http.request.method=PUT" not in line:
            continue
        if not re.search(r"http.response.status=201\b", line):
            continue
        found = re.search(r'http.request.uri=(?:"([^"]*)"|(\S+))', line)
        uri = (found.group(1) or found.group(2)) if found else ""
        blob = re.search(r"digest=(sha256%3A[0-9a-f]{64})", uri)
        manifest = re.match(r"/v2/(.+)/manifests/([^?]+)", uri)
        if blob:
            total += size(urllib.parse.unquote(blob.group(1)))
        elif manifest:
            repo, ref = manifest.groups()
            total += size(ref if ref.startswith("sha256:") else tag_digest(repo, ref))
    return total

# The least a publish of the assembled image needs: the index, each child's manifest and config, and each
# layer that is not the base image's, once.
index_digest = index.split("@")[1]
top, least, new_layers = read(index_digest), size(index_digest), {}
for child in top["manifests"]:
    manifest = read(child["digest"])
    least += size(child["digest"]) + manifest["config"]["size"]
    base_layers = {l["digest"] for l in manifest["layers"][:-1]}
    new_layers.update({l["digest"]: l["size"] for l in manifest["layers"][-1:] if l["digest"] not in base_layers})
least += sum(new_layers.values())

print("COPY-only blog, 4 platforms (examples/blog-static):")
print(f"{'builder':<10} {'apply -> Ready':>15} {'bytes pushed':>13} {'x least':>8}")
figures = {}
for kind, (seconds, first, last) in runs.items():
    figures[kind] = (float(seconds), pushed(int(first), int(last)))
    print(f"{kind:<10} {seconds + ' s':>15} {figures[kind][1]:>13} {figures[kind][1] / least:>8.2f}")
print(f"least a publish needs: {least} bytes (index, {len(top['manifests'])} manifests and configs, "
      f"{len(new_layers)} new layer(s))")
print(f"assemble vs buildah: {figures['buildah'][0] / figures['assemble'][0]:.1f}x faster "
      f"(goal >= 10x); bytes {figures['assemble'][1] / least:.2f}x the least (goal <= 1.05x)")
EOF
kubectl delete mab "$run-assemble" "$run-buildah" --wait=false >/dev/null
kubectl delete configmap "$run-context" --wait=false >/dev/null
