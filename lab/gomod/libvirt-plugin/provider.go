// Package libvirtbridge maps terraform-provider-libvirt onto Pulumi tokens, as pulumi-libvirt does.
package libvirtbridge

import (
	"github.com/dmacvicar/terraform-provider-libvirt/libvirt"
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfbridge"
	shimv2 "github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfshim/sdk-v2"
)

func Provider(version string) tfbridge.ProviderInfo {
	return tfbridge.ProviderInfo{
		P:       shimv2.NewProvider(libvirt.Provider()),
		Name:    "libvirt",
		Version: version,
		Config: map[string]*tfbridge.SchemaInfo{
			"uri": {Default: &tfbridge.DefaultInfo{EnvVars: []string{"LIBVIRT_DEFAULT_URI"}}},
		},
		Resources: map[string]*tfbridge.ResourceInfo{
			"libvirt_cloudinit_disk": {Tok: "libvirt:index/cloudInitDisk:CloudInitDisk"},
			"libvirt_domain":         {Tok: "libvirt:index/domain:Domain"},
			"libvirt_ignition":       {Tok: "libvirt:index/ignition:Ignition"},
			"libvirt_network":        {Tok: "libvirt:index/network:Network"},
			"libvirt_pool":           {Tok: "libvirt:index/pool:Pool"},
			"libvirt_volume":         {Tok: "libvirt:index/volume:Volume"},
			"libvirt_combustion":     {Tok: "libvirt:index/combustion:Combustion"},
		},
		DataSources: map[string]*tfbridge.DataSourceInfo{
			"libvirt_network_dns_host_template":        {Tok: "libvirt:index/getNetworkDnsHostTemplate:getNetworkDnsHostTemplate"},
			"libvirt_network_dns_srv_template":         {Tok: "libvirt:index/getNetworkDnsSrvTemplate:getNetworkDnsSrvTemplate"},
			"libvirt_network_dnsmasq_options_template": {Tok: "libvirt:index/getNetworkDnsmasqOptionsTemplate:getNetworkDnsmasqOptionsTemplate"},
			"libvirt_node_info":                        {Tok: "libvirt:index/getNodeInfo:getNodeInfo"},
			"libvirt_node_device_info":                 {Tok: "libvirt:index/getNodeDeviceInfo:getNodeDeviceInfo"},
			"libvirt_node_devices":                     {Tok: "libvirt:index/getNodeDevices:getNodeDevices"},
		},
	}
}
