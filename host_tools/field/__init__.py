"""What a technician runs on real boards: ports, flashing, deploy, provision, broker files,
inventory, verify, batch, labels, monitor, the board session and OTA release bundles."""
