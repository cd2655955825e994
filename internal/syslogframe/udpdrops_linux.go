//go:build linux

package syslogframe

import (
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// socketInode is the inode that names pc's socket in /proc/net/udp{,6}.
func socketInode(pc net.PacketConn) (string, bool) {
	sc, ok := pc.(syscall.Conn)
	if !ok {
		return "", false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return "", false
	}
	var st syscall.Stat_t
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = syscall.Fstat(int(fd), &st) }); err != nil || serr != nil {
		return "", false
	}
	return strconv.FormatUint(st.Ino, 10), true
}

// udpDrops is the kernel's count of datagrams dropped on the socket with
// that inode (the last column of /proc/net/udp{,6}: receive buffer full).
func udpDrops(inode string) (int64, bool) {
	for _, f := range []string{"/proc/net/udp", "/proc/net/udp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		lines := strings.Split(string(b), "\n")
		for _, l := range lines[min(1, len(lines)):] {
			// sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
			fs := strings.Fields(l)
			if len(fs) >= 13 && fs[9] == inode {
				n, err := strconv.ParseInt(fs[12], 10, 64)
				return n, err == nil
			}
		}
	}
	return 0, false
}
