// Package state is the client's local state: what a device keeps of its
// data set and of its own edits, behind a typed API, so that the client
// package above it only orchestrates (sync, status, limits).
//
// # Two files
//
// A state directory holds two bbolt files, each with its own lock and its
// own transactions:
//
//   - state.db (EditsFile): the edit queue, the edits the server applied
//     but the device has not pulled yet ("sent"), their index by key, the
//     patch in flight, conflicts, settings and counters. Its transactions
//     are small: an edit (Put, Merge, Delete) is one, fsync'd before it is
//     acknowledged.
//   - data.db (DataFile): the synced version. An install writes only here,
//     so an edit never waits for an install transaction (the whole point:
//     a 48 MB install used to hold the one write lock for 2 s).
//
// A full sync downloads into a third file, data.next.db (NextFile), which
// is renamed over data.db once installed: the version it replaces goes
// with its file. Opening the directory finishes a rename a crash
// interrupted and resumes (or drops) a download in progress.
//
// # The synced version: chunks and an index
//
// data.db keeps the version as the server cut it: its chunks, stored once
// each (S2-compressed with a CRC-32C, keyed by a local sequence number in
// arrival order, so that downloads append), and an index from record key
// to location: the offset in the chunk the record starts in and the
// chunks it runs into (one but for a record bigger than a chunk). A read
// decompresses the chunk (a small cache keeps the last ones) and decodes
// the record; there is no second copy of the data on disk. The chunks are
// what the next delta needs: the server compresses a changed chunk against
// the old ones it replaces, and the record changes of a delta are computed
// from the changed stretches of both versions (diff.Script.Spans),
// streaming, by merging their records in key order.
//
// The version lives in one of two slots ("slot.a", "slot.b"); meta
// "current" names the live one. A slot holds the version number, its
// manifest (a local encoding: no compression, no pack placement) with the
// sequence numbers of its chunks, and its index. The manifest's chunk list
// is kept in pages of up to 256 chunks under order keys with gaps between
// them, so a delta rewrites the pages it changes, not the list (pages.go;
// data format 1 kept it whole and is migrated when opened).
//
// # Installs: staged in batches, switched in one small transaction
//
// A download stores what arrives in batches, each one transaction with the
// download marker (Marker: which pack, how many chunks verified), so
// memory holds a batch, not the data set, and an interruption resumes
// after the last batch. A full sync indexes the records as its chunks
// arrive, into the other slot of its own file. Then the install:
//
//   - a full sync (or a delta changing more index entries than inPlaceMax,
//     whose new index is built from its chunks in batches) writes the
//     staging slot's manifest, then one small transaction flips "current"
//     and ends the download; the replaced slot is dropped in batches
//     (Cleanup) and, for a full sync, the file is renamed over data.db;
//   - a small delta applies its index writes to the live slot, stores its
//     chunks, drops the chunks it replaced and switches the version in one
//     transaction (a one-record delta is one transaction in all).
//
// A delta the client reads as an edit (a format-3 pack: wire's edit mode)
// is installed without the old or the new chunk list in memory (edit.go):
// Base reads the live slot's pages where the pack needs an entry (its
// places are one small read per page), the new list is the old one with
// the edit's regions replaced by their entries (ListEdit), the record
// changes come from the regions' spans, and the pages the regions touch
// are rewritten. Only the stream hash reads every entry's SHA-256, from
// the pages as they lie (scanPage: no entry is decoded). A delta of an old
// pack format, or one too big to install in place, builds the lists.
//
// Readers see one version or the other, never a mix: a read transaction
// reads "current" and the slot it names. Every step is idempotent or
// atomic: an install stopped between any two commits leaves the old or
// the new version, and the next pull finishes it (see
// TestInstallSurvivesAStopAfterAnyCommit).
//
// # The merged view
//
// Reads lay this device's edits over the synced records with diff.Fold,
// the server's own implementation of put, merge and delete, so the device
// shows what the server will apply. Edits are read before records (an
// install only ever makes the version newer, and tidies sent edits away
// after it switched), and a sent edit is laid over only while the synced
// version is older than the one holding it.
//
// # Check and migration
//
// Check opens a directory read-only and verifies everything (both files'
// consistency, every chunk against its SHA-256, the hash list against the
// manifest, the index against the records the chunks hold, no chunk left
// unreferenced, the queue against its index and the patch in flight). A
// state of format 1 (records and raw chunks in state.db) is migrated in
// place when opened: the records are cut into chunks again with the
// version's chunker parameters, which gives the server's chunks back (so
// deltas go on from the same version; if they do not match, the records
// are kept and the next pull is a full sync), and state.db is rewritten
// without them.
package state
