"""CityEdge edge gateway: durable store-and-forward from a site's broker to the city platform."""

__version__ = "0.1.0"
