# Credentials from the `secretRef` Secret, when one is mounted at /archway/git: kubernetes.io/basic-auth
# (username, password) through a credential helper that reads the files, or kubernetes.io/ssh-auth
# (ssh-privatekey, and known_hosts if the Secret has it; without it the host key is accepted on first use).
# The helper answers only for the scheme and host of the source's URL ($ARCHWAY_GIT_CREDENTIAL_URL): a
# redirect, or a submodule elsewhere, gets nothing.
c=/archway/git
if [ -f "$c/ssh-privatekey" ]; then
  GIT_SSH_COMMAND="ssh -i $c/ssh-privatekey -o IdentitiesOnly=yes"
  if [ -f "$c/known_hosts" ]; then
    GIT_SSH_COMMAND="$GIT_SSH_COMMAND -o UserKnownHostsFile=$c/known_hosts"
  else
    GIT_SSH_COMMAND="$GIT_SSH_COMMAND -o StrictHostKeyChecking=accept-new"
  fi
  export GIT_SSH_COMMAND
fi
# shellcheck disable=SC2016 # expanded by git's helper shell, not here
helper='!f() { test -f /archway/git/username && echo "username=$(cat /archway/git/username)"; test -f /archway/git/password && echo "password=$(cat /archway/git/password)"; true; }; f'
credential="credential.helper="
if [ -n "${ARCHWAY_GIT_CREDENTIAL_URL:-}" ]; then
  credential="credential.$ARCHWAY_GIT_CREDENTIAL_URL.helper=$helper"
fi
