package syslog

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// unsentBytes is how many bytes c's socket holds that the peer's TCP has
// not acknowledged (TIOCOUTQ: not yet sent, or sent and not ACKed); ok is
// false when that cannot be asked.
func unsentBytes(c net.Conn) (n int, ok bool) {
	sc, isSys := c.(syscall.Conn)
	if !isSys {
		return 0, false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var ierr error
	if err := rc.Control(func(fd uintptr) { n, ierr = unix.IoctlGetInt(int(fd), unix.TIOCOUTQ) }); err != nil || ierr != nil {
		return 0, false
	}
	return n, true
}
