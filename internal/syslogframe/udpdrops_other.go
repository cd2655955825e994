//go:build !linux

package syslogframe

import "net"

// Only Linux says how many datagrams it dropped on a socket.
func socketInode(net.PacketConn) (string, bool) { return "", false }

func udpDrops(string) (int64, bool) { return 0, false }
