"""Devices: the wire protocol, its transports, `heiti serve`, the host-side client, the
device's model store and stats, and the target node kinds that reach a device."""
