//go:build !unix

package syslog

import "net"

type peekResult int

const (
	peekUnknown peekResult = iota
	peekOpen
	peekData
	peekClosed
)

// peekSocket cannot peek here: peerClosed falls back to a short read.
func peekSocket(net.Conn) peekResult { return peekUnknown }
