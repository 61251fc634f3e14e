"""The enclave client library (no server-side imports)."""

from broker.audit.receipt import Receipt, ReceiptError
from broker.client.providers import EvidenceProvider, SampleProvider
from broker.client.session import BrokerClient, Released, RemoteError

__all__ = [
    "BrokerClient",
    "EvidenceProvider",
    "Receipt",
    "ReceiptError",
    "Released",
    "RemoteError",
    "SampleProvider",
]
