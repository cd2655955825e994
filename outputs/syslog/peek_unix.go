//go:build unix

package syslog

import (
	"errors"
	"net"
	"syscall"
)

type peekResult int

const (
	peekUnknown peekResult = iota // not a socket this can peek at
	peekOpen                      // nothing to read, no FIN
	peekData                      // bytes wait to be read
	peekClosed                    // FIN or an error (RST): the peer closed
)

// peekSocket looks at c's socket without waiting and without consuming
// anything (MSG_PEEK|MSG_DONTWAIT): no deadline, so no race with one.
func peekSocket(c net.Conn) peekResult {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return peekUnknown
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return peekUnknown
	}
	var n int
	var rerr error
	var b [1]byte
	err = rc.Read(func(fd uintptr) bool {
		for {
			n, _, rerr = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			if !errors.Is(rerr, syscall.EINTR) {
				return true // done: never wait for readability
			}
		}
	})
	switch {
	case err != nil:
		return peekClosed // the descriptor is closed
	case errors.Is(rerr, syscall.EAGAIN) || errors.Is(rerr, syscall.EWOULDBLOCK):
		return peekOpen
	case rerr != nil:
		return peekClosed
	case n == 0:
		return peekClosed // orderly shutdown: the FIN
	}
	return peekData
}
