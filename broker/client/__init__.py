"""The enclave client library (no server-side imports)."""

from broker.client.providers import EvidenceProvider, SampleProvider
from broker.client.session import BrokerClient, Released, RemoteError

__all__ = ["BrokerClient", "EvidenceProvider", "Released", "RemoteError", "SampleProvider"]
