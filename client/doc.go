// Package client is the device side of deltasync: the library a mobile app
// embeds to read and edit its data set offline and keep it in sync.
//
// # Local state
//
// Everything lives in one directory, in a bbolt file (state.db) that one
// process holds at a time. Its buckets hold the records of the synced
// version (key → canonical JSON), the chunk cache that pull fills, the queue
// of pending edits (big-endian sequence → JSON edit), the patch in flight,
// conflicts reported by the server, and settings and counters (server URL,
// token, local version and manifest, offline mode, org policy, traffic).
//
// # Reads and writes
//
// Get, Scan and Export see the synced version with the pending edits laid
// over it in queue order, so the app reads its own writes: a put replaces a
// value, a merge applies an RFC 7386 merge patch to the current value, a
// delete hides the key. Put, Merge and Delete validate their input, append
// to the queue in one transaction and return once it is fsync'd; they never
// touch the network. They then call the wake hook so a running sync loop
// pushes at once.
//
// # Sync (pull and push)
//
// The network side is built on a few internal steps, each one bbolt
// transaction: installVersion switches the records to a new verified version
// atomically (pending edits stay on top); beginPatch fixes the id, base and
// edits of the next patch and persists them before anything is sent, so a
// retry after a lost answer reuses the id and the server applies it once;
// completePatch records the server's receipts: applied edits leave the queue
// (staying visible until the version holding them is pulled) and conflicts
// are kept until the app acknowledges them.
//
// # Status
//
// Status reports what a status bar needs: syncing, synced, offline (no
// connection or offline mode) or error (auth, policy, server), versions,
// pending edits, traffic and download progress. OnStatus (or
// AddStatusListener, for gomobile) subscribes to changes; listeners are
// called one at a time, in order, outside the client's locks.
//
// # gomobile
//
// Exported methods take and return strings, []byte, integers and plain
// structs. Where Go style wants a func (Scan, OnStatus) there is also an
// interface form (ScanWith, AddStatusListener), and ConflictCount and
// ConflictAt stand in for the slice Conflicts returns.
package client
