#!/bin/sh
# Prepare the dev OpenBao for the brokers (docs/keys.md, "Set-up, step by step"), and
# write a periodic token holding only the broker policy to /creds/broker-token.
# Safe to run again: existing mounts and keys are kept.
set -eu
BAO_TOKEN="$(cat /run/secrets/bao-root-token)"
export BAO_TOKEN
bao secrets list -format=json | grep -q '"transit/"' || bao secrets enable transit
bao read transit/keys/broker-kek >/dev/null 2>&1 \
  || bao write -f transit/keys/broker-kek derived=true type=aes256-gcm96
bao secrets list -format=json | grep -q '"secret/"' || bao secrets enable -path=secret kv-v2
bao policy write attested-broker /opt/broker-policy.hcl
umask 077
bao token create -policy=attested-broker -period=24h -orphan -field=token > /creds/broker-token.new
# The brokers run as 10001 and read it; nothing else mounts this volume.
chown 10001:10001 /creds/broker-token.new
mv /creds/broker-token.new /creds/broker-token
