// Package diff says what changed between two versions of a user's data set,
// and lands an edit made offline against an old version on the current one
// without losing anything.
//
// # Manifest diff
//
// A version is a list of content-defined chunks whose boundaries fall
// between records (see package snapshot). Manifests computes the edit script
// between two chunk lists: runs of chunks both versions share, and regions
// where chunks were removed and inserted. A holder of version A needs
// exactly the inserted chunks to rebuild B (Script.Needed), and each of them
// is paired with the removed chunk it most likely replaces (Script.Base), so
// the server can compress it against a chunk the client already holds.
//
// # Record diff
//
// Because chunks are record-aligned, the records in a changed region are
// exactly the records that may have changed: Script.Records decodes only
// those chunks, on both sides, and compares them. Its cost follows the size
// of the change, not of the data set. Each Change carries the old and new
// value (Old nil: created; New nil: deleted).
//
// # Change sets
//
// Every version has the record-level change that produced it from its
// parent, stored in the change feed under a name its manifest records
// (CommitVersion writes it, then claims the version with a create-only
// write; see the layout in package snapshot). A batch rebuild records its record diff; a replayed
// patch records the changes as applied, the patch itself and its receipts.
// The change sets also form the change feed (ReadFeed) that the app's own
// backend reads.
//
// # Patches
//
// A Patch is {"id", "base", "ops"}: the client-chosen id makes retries
// idempotent, base is the version the client saw, and each op is a put of a
// whole value, an RFC 7386 merge patch into an object, or a delete.
// DecodePatch parses a body strictly and Validate checks it (known op, valid
// key, value and patch present where needed, a merge patch that is an
// object, sizes, Limits) and canonicalises every value. Several ops on one
// key are allowed and apply in order: users edit a record many times while
// offline.
//
// # Limits
//
// Limits bound a patch: MaxOps ops and MaxBytes of canonical body
// (EncodePatch, measured op by op with PatchSize) for a patch of several
// edits, and MaxRecordBytes for each value, merge patch and merged result.
// The first two only ever ask a client to split its queue into more
// patches; a patch of one edit is bounded by MaxRecordBytes alone
// (MaxBodyBytes), so every edit whose value fits a record fits a patch. A
// violation is a *LimitError (ErrTooLarge). Apply checks the limits after
// looking for a stored answer to the patch id, so a retry of a patch that was
// applied before the limits became stricter still gets its answer.
//
// # Replay
//
// Apply replays a patch on the head h. For every key the patch names, it
// reads the value at base and at head (only the chunks holding those keys;
// where base and head share those chunks the key is known unchanged without
// reading base at all), folds the client's ops onto the base value (what the
// client saw), and then:
//
//   - if the server did not change the key since base, the result is the
//     client's value: status applied;
//   - otherwise the client's and the server's values are merged three-way
//     against the base value, field by field and recursively into nested
//     objects: a side that left a field alone yields to the other, and both
//     sides making the same change agree: status merged;
//   - a field changed differently on both sides, an object against a
//     non-object, or a delete against an update (either way round, including
//     a put over a key the server deleted) is a conflict, resolved by the
//     policy: client-wins (the default) takes the client's value there,
//     server-wins keeps the server's, and reject refuses the whole patch
//     (RejectedError, matching ErrConflict) so the client can rebase.
//
// Arrays are values: they are not merged element by element. A key absent
// at base counts as an empty object, so two sides that created the same key
// with different fields merge. A merge op on a missing key creates it; a
// merge op on a value that is not an object is rejected on its own (the rest
// of the patch applies). The result is built on the head with
// snapshot.ApplyEdits, which re-chunks only the neighbourhood of the changed
// keys and writes one pack, and committed as version h+1. If another writer
// claimed h+1 first, Apply re-reads the head and replays again, so
// concurrent patches never lose each other's edits. A patch that changes
// nothing creates no version.
//
// # Receipts
//
// The answer to a patch is a Receipt per op: applied, merged, conflict
// (with the policy, whether the client won, the conflicting fields as JSON
// Pointers with "" for the whole record, and both sides' whole values, a
// deleted side being flagged instead) or rejected (with the reason). All ops
// on one key share its outcome. Receipts are stored in the version's change
// set and, after the commit, as the answer to the patch id
// (snapshot.PatchKey) together with a hash of the canonical patch, so a
// retry with the same id and body gets the same answer (Duplicate) and
// changes nothing, and the same id with another body is refused
// (ErrPatchIDReused). Before committing, Apply marks the id with a small
// intent object: a retry that finds the mark but no answer (a crash or a
// failed write between the commit and the answer) searches the versions
// since its base for the change set carrying the id and answers from it.
// Rejections and invalid patches store nothing.
//
// # The backend's patches, checks and edit times
//
// The app's backend writes with the same replay (ApplyOptions.Admin): its
// change sets are KindAdminPatch, its patch ids are kept apart from
// devices' (the same stored answers, another namespace), and its edits win
// every conflict. With AtHead the ops apply to the head as it is when the
// patch replays (after a lost race, the new head): the backend is the
// system of record, so nothing conflicts. ApplyOptions.Check, asked once
// before the replay (never for a retry answered from storage), refuses ops
// by index: they become rejected receipts with its reason and the rest
// apply (an org's validation hook). An op may carry the device's time of
// the edit (Op.At), which the change feed shows; it is not part of what
// identifies a patch, so a patch resent with times it lacked before is the
// same patch.
//
// # The feed, per org, and its consumers
//
// FeedOptions.Org reads one org's entries, passing the others by name
// without reading them, with cursors that never name another org (each
// becomes a position of time and the reader's org); Event is an entry as
// the backend reads it. A Consumer is a named reader of an org's feed
// whose acknowledged cursor bounds what gc may delete (HeldBy); FeedLag
// counts what it has yet to read.
package diff
