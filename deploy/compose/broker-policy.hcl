# The least the broker needs from OpenBao/Vault (docs/keys.md).
path "transit/encrypt/broker-kek" { capabilities = ["update"] }
path "transit/decrypt/broker-kek" { capabilities = ["update"] }
path "transit/rewrap/broker-kek"  { capabilities = ["update"] }
path "transit/keys/broker-kek"    { capabilities = ["read"] }
path "transit/keys/broker-kek/rotate" { capabilities = ["update"] }
path "transit/keys/broker-kek/config" { capabilities = ["update"] }
path "secret/data/broker/*" { capabilities = ["read"] }
