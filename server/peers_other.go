//go:build !linux

package server

import (
	"net"
	"time"
)

// peerWatcher notices clients that leave while their request is handled;
// without epoll, it watches each connection with a goroutine of its own
// (watchPeer).
type peerWatcher struct{}

func newPeerWatcher() *peerWatcher { return &peerWatcher{} }

func (*peerWatcher) watch(c net.Conn, gone func(), restore time.Duration) (stop func()) {
	return watchPeer(c, gone, restore)
}

func (*peerWatcher) close() {}
