// Command pulumi-tfgen-libvirt writes the Pulumi schema the resource plugin embeds.
package main

import (
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfgen"

	libvirtbridge "kubeadm-libvirt/lab/gomod/libvirt-plugin"
)

var version = "0.0.0"

func main() { tfgen.Main("libvirt", version, libvirtbridge.Provider(version)) }
