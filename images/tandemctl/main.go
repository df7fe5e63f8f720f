// Command tandemctl is the standalone tandemctl binary, for an
// administrator's machine: Tandem's API from a shell. `make tandemctl`
// builds it into images/out/tandemctl.
package main

import (
	"os"

	"github.com/tandemhci/tandem/services/cmd/tandemctl"
)

func main() { os.Exit(tandemctl.Main(os.Args[1:])) }
