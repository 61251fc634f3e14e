#!/bin/sh
# Random credentials for compose.yaml in ./secrets (kept if present). Never commit them.
set -eu
cd "$(dirname "$0")"
umask 077
mkdir -p secrets
rand() { python3 -c 'import secrets; print(secrets.token_urlsafe(32))'; }
[ -f secrets/admin.token ] || rand > secrets/admin.token
[ -f secrets/bao-root-token ] || rand > secrets/bao-root-token
[ -f secrets/pg-password ] || rand > secrets/pg-password
[ -f secrets/pg-dsn ] || printf 'postgresql://attested_broker:%s@postgres:5432/attested_broker\n' \
  "$(cat secrets/pg-password)" > secrets/pg-dsn
# Engines that bind-mount file secrets ignore the uid/mode in compose.yaml: the brokers
# (uid 10001) must be able to read these two.
if [ "$(id -u)" = 0 ]; then
  chown 10001:10001 secrets/admin.token secrets/pg-dsn
  chmod 0400 secrets/admin.token secrets/pg-dsn
else
  echo "not root: chown 10001 secrets/admin.token secrets/pg-dsn if your engine needs it" >&2
fi
