// Command daprd is Dapr's own sidecar, unmodified: main only calls Dapr's entry point. It is
// built by tests/dapr/build.sh with `-tags stablecomponents` (without a flavour tag daprd
// panics at start) and the version ldflag.
package main

import "github.com/dapr/dapr/cmd/daprd/app"

func main() {
	app.Run()
}
