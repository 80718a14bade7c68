"""The offline lab: a real Pulumi toolchain built from Go modules, a libvirt host in a private network namespace,
and a Debian guest image, so `pulumi up` runs for real on a machine with no internet."""
