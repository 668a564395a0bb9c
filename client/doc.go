// Package client is the device side of deltasync: the library a mobile app
// embeds to read and edit its data set offline and keep it in sync.
//
// # Local state
//
// Everything lives in one directory that one process holds at a time, in
// two bbolt files behind the internal package state: state.db keeps the
// queue of pending edits (big-endian sequence → JSON edit), the patch in
// flight, conflicts reported by the server, and settings and counters
// (server URL, token, offline mode, org policy, traffic); data.db keeps the
// synced version, once: its chunks as the server cut them (compressed)
// and an index from record key to the chunk and offset it is at. An
// install writes data.db only, so edits never wait for one. A directory
// written by the previous format (records and raw chunks in state.db) is
// migrated when opened. Check (and `deltasync client verify`) verifies a
// directory thoroughly.
//
// # Reads and writes
//
// Get, Scan and Export see the synced version with the pending edits laid
// over it in queue order, so the app reads its own writes: a put replaces a
// value, a merge applies an RFC 7386 merge patch to the current value, a
// delete hides the key. The ops are applied by diff.Fold, the server's own
// code, so the view shows what the server will apply (a merge onto a value
// that is no longer an object is left out, as the server refuses it). Put, Merge and Delete validate their input, append
// to the queue in one transaction and return once it is fsync'd; they never
// touch the network. They then call the wake hook so a running sync loop
// pushes at once.
//
// ScanPage (prefix, limit and startAfter paging), Count and GetMany (several
// keys from one consistent snapshot) answer the queries a UI needs offline
// on the same merged view.
//
// # Change events
//
// OnChange listeners learn which keys of the merged view changed: for each
// installed version the keys its record diff changed (Full for a full
// sync: reload everything), for each local edit its key, and for an edit
// that leaves the view (discarded, refused, lost a conflict) its key. Each
// Change also counts the keys per collection (the key up to its first
// '/'); a change of more than Options.MaxChangeKeys keys lists only those
// counts, so a 500-record insert is "forms: 300, photos: 200". The install
// path reports through installedChanges (install.go, then notifyInstalled
// in events.go), one call after the switch to the new version, with the
// keys state's install found changed while merging the index; a delta of
// more than state.MaxChangedKeys changes is reported as Full.
//
// # Sync (pull and push)
//
// Pull asks GET /v1/sync?from=<local version> and streams the delta pack
// (wire.DeltaReader) into a staging area that readers do not see: each
// chunk is verified against its keyed ID (changed chunks arrive
// compressed with the old chunks as dictionary, read from data.db) and
// written in batches, each with a download marker {from, to, received}, so
// memory holds a batch, not the data set. A full sync indexes the records
// as its chunks arrive, into a file of its own. If the download breaks,
// the next Pull asks for to=B&skip=K and fetches only what is missing; a
// marker that no longer lines up (the server answers another pack) is
// abandoned and what it stored dropped. When every chunk is in, the
// SHA-256 hash list of the chunk list must equal the manifest's stream
// hash; then one small transaction switches the version (a full sync's
// file is then renamed over data.db). After a delta only the records of
// changed chunks are read, merged in key order with the ones they replace:
// a small delta updates the index in the transaction that switches, a big
// one gets a new index built in batches. A stored chunk that fails its
// checksum makes the next pull a full sync: damage is repaired by
// refetching, never by guessing. installedChanges reports the keys each
// installed version changed.
//
// Push sends the queue as patches. beginPatch fixes the id, base and edits
// of the next patch and persists them before anything is sent, so a retry
// after a lost answer (also after a restart) resends the same id and the
// server applies it once; completePatch records the receipts: applied,
// merged and conflicting edits leave the queue (staying visible until the
// version holding them is pulled), conflicts and rejected edits are kept
// with both values until the app acknowledges them. Under the org's reject
// policy a conflicting patch is refused whole (409): its conflicts are
// kept, its edits stay queued, and pushing pauses until Rebase (pull, then
// send the edits on the new base) or DiscardEdits. 400 turns the patch's
// edits into rejected conflicts.
//
// # Limits
//
// No edit is ever rejected for a limit that splitting meets. The policy
// carries the server's patch limits (ops and bytes per patch, bytes per
// record; diff.DefaultLimits before the first policy): formPatch fills each
// patch up to them, measured on the exact body sent, and a patch of one
// edit may be as large as one record. Put and Merge refuse at once a value
// over the record limit (ErrTooLarge). A 413 means the server applied
// nothing: with the policy in its body the client forms patches by it; an
// older server's bare 413 halves the edits per patch. An edit that cannot
// be sent at all (the org lowered the record limit after it was made, or a
// server refused it alone) is blocked, never dropped: it stays queued and
// visible with the later edits of its record behind it, the status says
// error/blocked with the reason (Blocked lists them), and it goes out when
// a policy allows it or is dropped by DiscardEdits.
//
// Sync is push then pull. Start runs it in the background: long polls for
// new versions, wakes on every edit and on connectivity, retries failures
// with capped exponential backoff and jitter, and stops all network use in
// offline mode or after NotifyConnectivity(false).
//
// # Sign-in
//
// The bearer token is either stored in the state directory (Options.Token,
// SetServer) or, with Options.TokenProvider, asked from the app: before the
// first request, before a token with a readable exp expires, and when the
// server answers 401 (the request is then sent once more with the new
// token). A provided token lives in memory only, never in the state file.
//
// # Sign-out
//
// Wipe removes a user's local state for a shared device: it pushes the
// pending edits first and refuses (ErrPendingEdits) while any remain,
// unless forced; state.db is sealed in the transaction that checks the
// queue (a concurrent edit fails with ErrWiped), then every state file
// (state.db, data.db, data.next.db) is deleted; a sealed state left by a
// crash is deleted by the next Open.
//
// # Status
//
// Status reports what a status bar needs: syncing, synced, offline (no
// connection or offline mode) or error (auth, policy, server; policy also
// when the device is over the org's MaxPendingBytes, or offline longer than
// its MaxOfflineSeconds, with the limit explained in Message: limits the
// device shows and the server does not refuse uploads for; blocked when
// edits cannot be sent under the org's limits; storage when this device's
// disk is full or failing), versions,
// pending edits, traffic and download progress. OnStatus (or
// AddStatusListener, for gomobile) subscribes to changes; listeners are
// called one at a time, in order, outside the client's locks.
//
// The status tells the truth across restarts and outages. The last settled
// state (synced, an error with its reason, offline for want of a
// connection) is persisted with the counters, and a new process reports
// it until it has talked to the server; a client that never synced is
// syncing, "not synced yet". They are written once an attempt, with its
// outcome (and the result of Pull, Push or Sync, in the same commit): the
// server's answer, which turns the state syncing and stamps
// LastContactUnix, waits for that commit (a one-record pull costs state.db
// one commit; a crash in between loses that stamp, not an edit). Offline appears only after an attempt failed
// to reach the server (or NotifyConnectivity(false), or offline mode). An
// attempt does not announce itself: the state turns syncing when the
// server answers (so offline becomes syncing once per outage), or goes
// straight to the outcome, so an outage is one change (synced → offline)
// and retries against an unreachable server change nothing but the
// "retrying in N s" of the message (NextRetryUnix). The
// since-online counters restart when an outage ends, not on every
// attempt, and count only bytes that crossed the network: bodies read by
// the transport (none for a refused connection; a body over 64 KiB asks
// "Expect: 100-continue" first, so a refusal costs only headers) and
// received. MaxOfflineSeconds counts from the last successful answer
// (LastContactUnix) and alarms only once the device is known to be
// offline. Offline mode cannot be switched on before a sync has completed
// (ErrNotSynced): there would be nothing to work with.
//
// # Photos and files
//
// Attach and AttachFile keep a blob on the device, durably and offline, and
// return the reference ({"$blob":"sha256:…"}) the app puts into a record.
// A push uploads the blobs a patch references before the patch (resuming
// where the server stopped); a sync downloads the blobs of new records up
// to the org's eager size, and Blob fetches the others (resuming too).
// Blobs live in <dir>/blobs with their own index (client/internal/blobstore),
// beside the state file: pending ones are never evicted, downloaded ones
// are, least recently used first, past Options.BlobCacheBytes. blobs.go
// has the details.
//
// # gomobile
//
// This package is for Go programs: run through gobind it loses much (uint64
// versions, Options, funcs, contexts). Android and iOS apps use the façade
// in client/mobile, which binds with nothing skipped and is checked in CI.
// The older gomobile twins here (OpenDir, CurrentStatus, StartSync,
// ScanWith, AddStatusListener, ConflictAt, …) remain for existing callers.
package client
