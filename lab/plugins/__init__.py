"""Lab stand-ins for the `command` and `tls` resource plugins.

The Go module proxy these machines reach refuses every version of `github.com/pulumi/pulumi-command/provider`,
`github.com/pulumi/pulumi-tls/provider/v5`, `github.com/pulumi/pulumi-go-provider` and
`github.com/hashicorp/terraform-provider-tls` (403 "This module version is not available"), so neither plugin can
be built here. These two providers implement, over Pulumi's provider protocol, exactly the part of each plugin the
stack uses (`command:remote:Command`, `tls:index/privateKey:PrivateKey`), with the same names, inputs and outputs,
so the real engine drives the real program and the real libvirt plugin against them. What they cannot prove is the
real plugins' own behaviour (pulumi-command's dial retries and output streaming, the tls provider's key encoding);
the README's lab section lists that. Each file runs on its own (copied into the plugin directory with `base.py`).
"""
