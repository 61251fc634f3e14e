"""Typed application keys shared by the api modules."""

from __future__ import annotations

from aiohttp import web

from broker.api.metrics import Metrics
from broker.config import Settings
from broker.wiring import Services

SETTINGS = web.AppKey("settings", Settings)
SERVICES = web.AppKey("services", Services)
METRICS = web.AppKey("metrics", Metrics)
REQUEST_ID = web.RequestKey("request_id", str)
