# Devices of Tandem's own QEMU build (x86_64-softmmu): configure takes it as
# --without-default-devices --with-devices-x86_64=tandem, after the build
# script copies it to configs/devices/x86_64-softmmu/tandem.mak. Everything
# not listed (or selected by what is listed) is left out, to build faster.

# Boards: q35 (AHCI, ICH9) and pc (i440fx, PIIX IDE). isapc comes with pc.
CONFIG_Q35=y
CONFIG_I440FX=y

# Display for the VNC console (-vga std).
CONFIG_VGA_PCI=y

# PCI Express root ports, for devices on a q35 machine behind a port.
CONFIG_PCIE_PORT=y

# virtio-net/blk/rng/serial over PCI.
CONFIG_VIRTIO_PCI=y
CONFIG_VIRTIO_NET=y
CONFIG_VIRTIO_BLK=y
CONFIG_VIRTIO_RNG=y
CONFIG_VIRTIO_SERIAL=y

# e1000 NIC (the COLO guests use it) and the i6300esb watchdog.
CONFIG_E1000_PCI=y
CONFIG_WDT_IB6300ESB=y
