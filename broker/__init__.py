"""An attested key broker: releases keys to TEEs whose evidence satisfies policy."""

__version__ = "0.1.0"
