//go:build linux || darwin

package server

import (
	"net"
	"sync/atomic"
	"syscall"
	"time"
)

// descriptorLimit is the process's limit on open file descriptors
// (RLIMIT_NOFILE, the soft limit Go raised to the hard one at start).
func descriptorLimit() (uint64, bool) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, false
	}
	return rl.Cur, true
}

// peekRecheck is how soon watchPeer looks again when bytes wait on the
// connection (a request body the handler has not read, or a pipelined
// request): the socket stays readable, so the poller cannot wait for it.
const peekRecheck = 250 * time.Millisecond

// watchPeer calls gone, once, if the client closes (or resets) the
// connection before stop is called. It waits in the network poller, so an
// idle long poll costs nothing; it peeks (MSG_PEEK) and never consumes a
// byte. stop ends the watch (it borrows the read deadline to wake the
// poller) and leaves the read deadline restore from then. Connections
// without a socket (in-memory ones) are not watched.
func watchPeer(c net.Conn, gone func(), restore time.Duration) (stop func()) {
	rc, ok := rawConn(c)
	if !ok {
		return func() {}
	}
	var stopping atomic.Bool
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			closed, pending, err := peek(rc)
			switch {
			case err != nil || stopping.Load():
				return // stop set a past deadline, or the socket is gone
			case closed:
				gone()
				return
			case pending:
				select {
				case <-quit:
					return
				case <-time.After(peekRecheck):
				}
			}
		}
	}()
	return func() {
		stopping.Store(true)
		close(quit)
		_ = c.SetReadDeadline(time.Unix(1, 0)) // wakes the poller wait
		<-done
		_ = c.SetReadDeadline(time.Now().Add(restore))
	}
}

// rawConn is c's socket, if it has one (in-memory connections do not).
func rawConn(c net.Conn) (syscall.RawConn, bool) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, false
	}
	rc, err := sc.SyscallConn()
	return rc, err == nil
}

// peek waits until the connection is readable and reports whether the peer
// closed it (end of stream or an error) or bytes are pending.
func peek(rc syscall.RawConn) (closed, pending bool, err error) {
	var b [1]byte
	err = rc.Read(func(fd uintptr) bool {
		n, _, rerr := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case rerr == syscall.EAGAIN || rerr == syscall.EINTR:
			return false // nothing yet: wait in the poller
		case rerr != nil || n == 0:
			closed = true
		default:
			pending = true
		}
		return true
	})
	return closed, pending, err
}
