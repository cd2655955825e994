// Command vmlineage traces the lifecycle of the VMs of a XenServer / XCP-ng
// pool, keeps their family tree, and ships lifecycle records to SIEMs.
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := newRoot().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "vmlineage:", err)
		os.Exit(1)
	}
}
