# Clones $1 into $3 and checks out commit $2 (resolved by the operator, so every platform builds it).
git -c "$credential" clone --quiet -- "$1" "$3"
git -C "$3" -c advice.detachedHead=false checkout --quiet "$2"
