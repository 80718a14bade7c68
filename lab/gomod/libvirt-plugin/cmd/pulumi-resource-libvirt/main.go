// Command pulumi-resource-libvirt is the libvirt resource plugin: terraform-provider-libvirt behind the Pulumi bridge.
package main

import (
	_ "embed"

	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfbridge"

	libvirtbridge "kubeadm-libvirt/lab/gomod/libvirt-plugin"
)

var version = "0.0.0"

//go:embed schema.json
var schema []byte

func main() { tfbridge.Main("libvirt", version, libvirtbridge.Provider(version), schema) }
