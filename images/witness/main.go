// Command witness is the standalone tandem-witness binary for any Linux
// host: only the witness command, statically linked. `make witness`
// builds it into images/out/tandem-witness.
package main

import (
	"os"

	witnesscmd "github.com/tandemhci/tandem/services/cmd/tandem-witness"
)

func main() { os.Exit(witnesscmd.Main(os.Args[1:])) }
