# Sourced by the scripts that build programs from Go modules into the cache outside the repository.
#
# enter_cache KEY BIN...: when $cache/KEY/bin holds every BIN, prints that directory and exits the
# script; otherwise takes the lock of KEY (waiting while another caller builds it), checks again, and
# returns with $out set to $cache/KEY, for the caller to build into.

complete() { local b; for b in "${bins[@]}"; do [ -x "$out/bin/$b" ] || return 1; done; }

enter_cache() {
  local key=$1
  shift
  bins=("$@")
  cache=${ARCHWAY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/archway}
  out="$cache/$key"
  if complete; then echo "$out/bin"; exit 0; fi
  mkdir -p "$out"
  exec 9>"$out/.lock"
  flock 9
  if complete; then echo "$out/bin"; exit 0; fi
}
