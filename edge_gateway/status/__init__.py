"""The fleet status page: liveness from data, maintenance, a compact history, the counts, the
device table and device pages, and the JSON API behind them (docs/status.md).

This package's top level imports no web framework: :class:`StatusFeed` is what the gateway
feeds; :mod:`edge_gateway.status.web` (aiohttp) is imported only when the page is served.
"""

from edge_gateway.status.feed import StatusFeed

__all__ = ["StatusFeed"]
