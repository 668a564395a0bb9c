//go:build linux

package server

import (
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// peerWatcher notices clients that leave while their request is handled,
// for every connection of a server at once: one epoll instance holds the
// sockets being watched (EPOLLRDHUP, one shot), and one goroutine reads
// its events. A held long poll so costs a map entry here instead of a
// goroutine and its stack (issue 10: memory per connected device). The
// epoll instance waits in the runtime's network poller like a socket, so
// no thread is blocked on it.
//
// Only the end of the client's stream wakes it (FIN, RST, an error): bytes
// the client sends meanwhile (a pipelined request, a body the handler has
// not read) do not, so, unlike watchPeer, nothing needs to look again
// while they wait unread. A connection that cannot be added (no socket, or
// the epoll instance could not be made) falls back to watchPeer.
type peerWatcher struct {
	once sync.Once
	ep   *os.File        // the epoll instance; nil until the first watch, or if it failed
	rc   syscall.RawConn // of ep
	done chan struct{}   // closes when the event loop has ended

	mu      sync.Mutex
	next    uint64
	watched map[uint64]func() // gone, by the id in the socket's epoll event
}

func newPeerWatcher() *peerWatcher {
	return &peerWatcher{watched: map[uint64]func(){}, done: make(chan struct{})}
}

// watch calls gone, once, if the client closes (or resets) c before stop
// is called; gone is never called once stop has returned. stop leaves the
// read deadline restore from then, as watchPeer does. Connections without
// a socket (in-memory ones) are not watched.
func (p *peerWatcher) watch(c net.Conn, gone func(), restore time.Duration) (stop func()) {
	rc, ok := rawConn(c)
	if !ok {
		return func() {}
	}
	p.once.Do(p.start)
	if p.ep == nil {
		return watchPeer(c, gone, restore)
	}
	p.mu.Lock()
	id := p.next
	p.next++
	p.watched[id] = gone
	p.mu.Unlock()
	if err := p.ctl(rc, unix.EPOLL_CTL_ADD, id); err != nil {
		p.forget(id)
		return watchPeer(c, gone, restore)
	}
	return func() {
		p.forget(id)
		// Taken out of the epoll instance before the socket is closed (the
		// handler returns before fasthttp closes its connection), so the
		// next request on the connection can be added again.
		_ = p.ctl(rc, unix.EPOLL_CTL_DEL, id)
		_ = c.SetReadDeadline(time.Now().Add(restore))
	}
}

// forget drops id, so that an event of its socket already on its way
// calls nothing. Events are delivered under p.mu: once forget has
// returned, gone is not running and will not run.
func (p *peerWatcher) forget(id uint64) {
	p.mu.Lock()
	delete(p.watched, id)
	p.mu.Unlock()
}

// ctl adds the socket of rc to the epoll instance (under id), or removes
// it. Both descriptors are held open meanwhile (RawConn.Control), so
// neither number can name another file by the time the call is made.
func (p *peerWatcher) ctl(rc syscall.RawConn, op int, id uint64) error {
	var err error
	cerr := rc.Control(func(fd uintptr) {
		perr := p.rc.Control(func(epfd uintptr) {
			ev := unix.EpollEvent{Events: unix.EPOLLRDHUP | unix.EPOLLONESHOT}
			ev.Fd, ev.Pad = int32(uint32(id)), int32(uint32(id>>32))
			err = unix.EpollCtl(int(epfd), op, int(fd), &ev)
		})
		if perr != nil {
			err = perr
		}
	})
	if cerr != nil {
		return cerr
	}
	return err
}

// start makes the epoll instance and starts its event loop; if it cannot,
// p.ep stays nil and every watch falls back to watchPeer.
func (p *peerWatcher) start() {
	ep, err := openEpoll()
	if err == nil {
		p.rc, err = ep.SyscallConn()
	}
	if err != nil {
		if ep != nil {
			_ = ep.Close()
		}
		close(p.done)
		return
	}
	p.ep = ep
	go p.run()
}

// openEpoll makes a non-blocking epoll instance registered with the
// runtime's network poller (os.NewFile does that for a non-blocking
// descriptor), so that reading its events parks a goroutine, not a thread.
func openEpoll() (*os.File, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("epoll: set non-blocking: %w", err)
	}
	return os.NewFile(uintptr(fd), "peer-epoll"), nil
}

// run reads the epoll instance's events until close.
func (p *peerWatcher) run() {
	defer close(p.done)
	events := make([]unix.EpollEvent, 64)
	for {
		var n int
		var werr error
		err := p.rc.Read(func(fd uintptr) bool {
			for {
				n, werr = unix.EpollWait(int(fd), events, 0)
				if werr != unix.EINTR {
					return werr != nil || n > 0 // else wait until it is readable
				}
			}
		})
		if err != nil || werr != nil {
			return // closed
		}
		p.deliver(events[:n])
	}
}

// deliver calls gone for each socket that reported its end.
func (p *peerWatcher) deliver(events []unix.EpollEvent) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, ev := range events {
		id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
		if gone, ok := p.watched[id]; ok {
			delete(p.watched, id)
			gone()
		}
	}
}

// close ends the event loop and closes the epoll instance. Watches still
// running are not reported any more; their stop still works.
func (p *peerWatcher) close() {
	p.once.Do(func() { close(p.done) }) // never started: nothing to end
	if p.ep != nil {
		_ = p.ep.Close()
	}
	<-p.done
}
