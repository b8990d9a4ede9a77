// Command etcd is the etcd server, built from the etcd module version that the pinned
// Kubernetes release is tested against, so the local control plane needs no download.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
