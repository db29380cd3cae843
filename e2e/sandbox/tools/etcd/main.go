// Command etcd runs etcd's own entry point; it exists only so the sandbox can
// build a pinned etcd from the Go module proxy.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
