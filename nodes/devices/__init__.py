"""Devices: the wire protocol, its transports, `heiti serve`, the host-side client, the
device's model store and stats, and the target node kinds that reach a device."""

#: the modules holding node kinds (the rest is device machinery the registry need not import)
NODE_MODULES = ("targets",)
