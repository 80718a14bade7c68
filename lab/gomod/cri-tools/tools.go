//go:build tools

// The main package the lab builds; imported so `go mod tidy` pins its graph.
package tools

import _ "sigs.k8s.io/cri-tools/cmd/crictl"
