//go:build !(linux || darwin)

package server

import (
	"net"
	"time"
)

func descriptorLimit() (uint64, bool) { return 0, false }

// watchPeer is a no-op where the socket cannot be peeked at.
func watchPeer(net.Conn, func(), time.Duration) func() { return func() {} }
