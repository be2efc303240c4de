#!/usr/bin/env bash
# Stops the local environment that hack/dev-up.sh started.
set -euo pipefail
dir=${1:-.dev}
if [ ! -f "$dir/testenv.pid" ]; then echo "no local environment in $dir"; exit 0; fi
target/debug/archway-testenv down --dir "$dir"
