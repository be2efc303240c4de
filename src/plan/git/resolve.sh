# Resolves revision $2 of $1 and reads the Dockerfile at path $3 of that commit, into the termination
# log (at most 4096 bytes): the refs of $1 that match $2 (none when $2 is a full commit), then one line
# `archway-dockerfile <commit> <state>`, state being `gzip` (the next line is the file, gzipped, in
# base64), `missing`, `too-large <bytes>` or `unread <why>`. $4... are the refs that may name the
# commit, best first: the operator's rule, handed over so that the Dockerfile is read where the
# operator builds (it checks the commit named here against its own choice).
url=$1 revision=$2 path=$3
shift 3
log=/dev/termination-log
limit=4096
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
: > "$work/report"
commit=$revision
if [ $# -gt 0 ]; then
  refs=$(git -c "$credential" ls-remote -- "$url" "$revision" "$revision^{}")
  if [ -z "$refs" ]; then
    echo "no branch or tag named $revision in $url; use a branch, a tag or a full 40-character commit" >&2
    exit 1
  fi
  printf '%s\n' "$refs" > "$work/report"
  commit=
  for matched in "$@"; do
    commit=$(printf '%s\n' "$refs" | awk -F '\t' -v ref="$matched" '$2 == ref { print $1; exit }')
    [ -n "$commit" ] && break
  done
  # No ref of the operator's list: it says so, from the refs.
  if [ -z "$commit" ]; then
    cp "$work/report" "$log"
    exit 0
  fi
fi

# Only the commit and its trees are fetched (blobs on demand, where the server filters): the
# Dockerfile's blob is then the one read. A server that refuses a commit id is asked for the ref.
read_dockerfile() {
  repo=$work/repo
  git init --quiet "$repo" 2>/dev/null && git -C "$repo" remote add origin "$url" || return 1
  fetch() { git -C "$repo" -c "$credential" fetch --quiet --depth 1 --filter=blob:none origin "$1" 2>"$work/err"; }
  if ! fetch "$commit"; then
    [ -n "${matched:-}" ] && fetch "${matched%'^{}'}" || return 1
    [ "$(git -C "$repo" rev-parse 'FETCH_HEAD^{commit}')" = "$commit" ] || {
      echo "$revision moved while it was read" > "$work/err"
      return 1
    }
  fi
  entry=$(git -C "$repo" ls-tree "$commit" -- "$path")
  case $entry in
    *" blob "*) ;;
    *) state=missing; return 0 ;;
  esac
  git -C "$repo" -c "$credential" cat-file blob "$commit:$path" > "$work/dockerfile" 2>"$work/err" || return 1
  gzip -9 -n -c "$work/dockerfile" | base64 | tr -d '\n' > "$work/encoded"
  header="archway-dockerfile $commit gzip"
  used=$(($(wc -c < "$work/report") + ${#header} + 2))
  size=$(wc -c < "$work/encoded")
  if [ $((used + size)) -gt $limit ]; then
    state="too-large $size"
  else
    state=gzip
  fi
}

state=
if ! read_dockerfile; then
  why=$(tail -n 1 "$work/err" 2>/dev/null | cut -c 1-300)
  state="unread ${why:-cannot fetch $commit}"
fi
printf 'archway-dockerfile %s %s\n' "$commit" "$state" >> "$work/report"
if [ "$state" = gzip ]; then
  cat "$work/encoded" >> "$work/report"
  echo >> "$work/report"
fi
cp "$work/report" "$log"
