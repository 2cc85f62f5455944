"""CityEdge host tools: the `cityedge` command, node simulation, and field tools for technicians."""

__version__ = "0.1.0"
