"""``wrap``: wraps per second per algorithm for a 32-byte key, against the raw KEM floor.

The target is ``broker.keys.wrap.wrap`` as the release path calls it (JWK
parsing, header, envelope encoding included). The floor is the public-key work
no implementation of the algorithm can skip for one message.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec

from bench import floors
from bench.common import Budget, Result, compare
from broker.keys.algorithms import WrapContext
from broker.keys.unwrap import RSA_BITS, ClientKeyPair, KeyKind, unwrap
from broker.keys.wrap import wrap

COLUMNS = ["algorithm", "key", "wraps/s", "us/wrap", "floor op", "floor ops/s", "ratio"]


@dataclass(frozen=True, slots=True)
class Case:
    label: str
    kind: KeyKind
    key: str
    floor_name: str
    floor: Callable[[], floors.Op]


CASES = (
    Case(
        "ECDH-ES+A256KW",
        "p256",
        "P-256",
        "P-256 keygen+ECDH",
        lambda: floors.ecdh_ephemeral(ec.SECP256R1()),
    ),
    Case(
        "ECDH-ES+A256KW",
        "p521",
        "P-521",
        "P-521 keygen+ECDH",
        lambda: floors.ecdh_ephemeral(ec.SECP521R1()),
    ),
    Case(
        "RSA-OAEP-256",
        "rsa",
        f"RSA-{RSA_BITS}",
        f"RSA-{RSA_BITS} OAEP encrypt",
        lambda: floors.rsa_oaep_encrypt(RSA_BITS),
    ),
    Case("HPKE-3", "x25519", "X25519", "X25519 keygen+DH", floors.x25519_ephemeral),
    Case(
        "HPKE-10",
        "mlkem768x25519",
        "ML-KEM-768+X25519",
        "ML-KEM-768 encap + X25519 keygen+DH",
        floors.mlkem768_x25519_encap,
    ),
    Case("nacl-sealedbox", "sealedbox", "X25519", "X25519 keygen+DH", floors.x25519_ephemeral),
)


def _wrapper(case: Case, result: Result) -> Callable[[], object] | None:
    pair = ClientKeyPair.generate(case.kind)
    jwk = pair.public_jwk()
    secret = os.urandom(32)
    context = WrapContext(resource="bench/key/k0", version=1, jti="bench-jti-0")
    # The envelope must open before its speed means anything.
    envelope = wrap(jwk, secret, context=context).envelope
    if unwrap(envelope, pair, context=context) != secret:
        result.errors.append(f"{case.label} ({case.key}): wrapped key did not unwrap")
        return None
    return lambda: wrap(jwk, secret, context=context)


def run(budget: Budget) -> Result:
    result = Result(
        name="wrap",
        title="wraps/s of a 32-byte key per algorithm vs the raw KEM floor",
        columns=COLUMNS,
    )
    for case in CASES:
        target = _wrapper(case, result)
        if target is None:
            continue
        wrap_rate, floor_rate = compare([target, case.floor()], budget)
        result.rows.append(
            {
                "algorithm": case.label,
                "key": case.key,
                "wraps/s": wrap_rate.ops_per_s,
                "us/wrap": wrap_rate.seconds_per_op * 1e6,
                "floor op": case.floor_name,
                "floor ops/s": floor_rate.ops_per_s,
                "ratio": wrap_rate.seconds_per_op / floor_rate.seconds_per_op,
            }
        )
    result.notes.append(
        "ratio = wrap cost / floor cost; 1.0 would mean the envelope, JOSE and JSON work is free"
    )
    return result
