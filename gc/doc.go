// Package gc removes the versions of a store that fall outside retention and
// the objects no remaining version references, without ever taking a chunk
// from under a concurrent build, patch replay or sync.
//
// # What is collected
//
// Run lists the store once to find the users ("<org>/<user>/…"; the secret
// "_deltasync/…" and org settings "<org>/_settings.json" are not users) and
// handles them one by one. For each user it keeps the head and the versions
// the retention rule names: the newest N (KeepVersions), or those whose
// manifest was created within D days (KeepDays, by Manifest.CreatedUnix).
// The retained versions are always a contiguous range ending at the head:
// every version older than the oldest retained one is deleted, oldest
// first, manifest before its change set. Then the packs that no remaining
// manifest references are deleted (a pack is shared by every version that
// reuses one of its chunks, so it stays while any retained manifest
// references it).
//
// A version's change set lives in the change feed ("_feed/…", where
// diff.CommitVersion writes it) and goes with its version: only the feed
// object named by a deleted version's manifest, and only if its name
// carries that org, user and version, is deleted. Feed entries of lost
// version races (a writer writes its change set before it tries to claim
// the version, and the loser's entry is named by no manifest) are left
// alone: the feed skips them, and finding them would mean reading a
// manifest per entry. A reader of the feed that is not registered may
// be outrun: retention bounds how far it may fall behind. A registered
// consumer (diff.Consumer: the app's backend, an org's webhook delivery)
// is never outrun: a version whose feed entry comes after some consumer's
// acknowledged cursor is kept, with every later one, whatever the
// retention rule (Counts.VersionsHeld; Report.Consumers names them, and
// those that have not acknowledged for Options.ConsumerStale are flagged
// stale and warned of). Consumers are read once, before the listing.
//
// Blobs are collected after the users, per org (blobs.go has the rules):
// a blob's content and its grants go once the blob is older than the grace
// period, no grant of it is younger, no upload of it is in progress, and
// no remaining version of any user of the org references it.
//
// Nothing else is deleted: only exact layout names below a user's packs/
// and versions/ plus those feed entries, and the blobs above. The head
// hint, patch answers ("<org>/<user>/patches/…"), org settings, consumers,
// leases, the secret and any object gc does not recognise are never
// touched. Patch answers are left alone on
// purpose: an answer makes a retried patch idempotent, and a client may
// retry after any time offline, so no age makes deleting one safe until the
// server defines how long a patch id stays valid.
//
// A store that keeps temporary files of its own (snapshot.TempSweeper: the
// directory store's dir/.tmp/put-*) also has those removed that killed
// writers abandoned: older than the grace period and never younger than an
// hour (Report.TempFilesDeleted).
//
// # Two phases and a grace period
//
// Writers never coordinate with gc. A build writes its packs (create-only)
// before it claims the manifest that references them, so for a while they
// look unreferenced. gc therefore works in two phases per user. Phase 1
// reads the manifests that exist and computes the live set. Phase 2 deletes
// the expired versions, then re-reads the head: versions claimed since
// phase 1 add their packs to the live set. Only then are unreferenced
// packs deleted, and only those older than the
// grace period (ObjectInfo.ModTime before Now - Grace), judged by the
// listing and again by a Stat right before the Delete. A build whose claim
// lands after the re-check must have written its packs within the grace
// period, so they survive.
//
// Expired versions get the same protection: a version is deleted only once
// the version that superseded it is older than the grace period. Until
// then a sync may still be downloading it, and a build that read it as its
// parent may still be copying chunk references from it. This also keeps a
// deleted version number from being claimed again by a stale writer: to do
// that, the writer would have to have read the head before the successor
// existed, more than a grace period earlier.
//
// The grace period must exceed the longest build, replay or sync, and the
// clock skew between gc's host and the store (ModTime is the store's
// clock), plus a minute: a patch referencing a blob whose grant is younger
// than a minute does not write the grant again. The default is an hour.
//
// # Costs and limits
//
// A writer never reuses an existing pack object: when the name a build
// would give a pack is taken (a re-run after a crash, or data that returns
// to an earlier state), it writes the pack under a fresh name (see the
// layout in package snapshot), so a pack a new version references is
// always as young as its build and the grace period protects it
// (TestReusedPackDuringGC). gc also re-stats an object right before
// deleting it, so one written again since the listing counts as young.
//
// A run lists the whole store once (the change feed included, skipped as
// it goes by) and reads every manifest of every user;
// it issues one Delete per object. Run one gc at a time per store: two
// concurrent runs would not corrupt anything, but both would count the same
// deletions.
package gc
