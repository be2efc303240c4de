# Lists the refs of $1 that match revision $2 (and its peeled tag, $2^{}) into the termination log, where
# the operator picks the commit.
refs=$(git -c "$credential" ls-remote -- "$1" "$2" "$2^{}")
if [ -z "$refs" ]; then
  echo "no branch or tag named $2 in $1; use a branch, a tag or a full 40-character commit" >&2
  exit 1
fi
printf '%s\n' "$refs" > /dev/termination-log
