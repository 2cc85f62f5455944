"""Over-the-air updates distributed by the gateway (docs/ota.md): rollout plans and state
(:mod:`edge_gateway.ota.rollout`), the MQTT service in the gateway's loop
(:mod:`edge_gateway.ota.service`) and ``cityedge ota publish/status``
(:mod:`edge_gateway.ota.cli`)."""
