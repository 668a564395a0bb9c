// Package snapshot is the storage heart of deltasync: it turns one user's
// data set into immutable, content-addressed versions in an object store,
// and reads them back verified. Everything above it (diff, wire, server,
// client, batch, gc) works in its terms.
//
// # From records to a version
//
// A data set belongs to one user of one org. It is a set of records: a key
// (UTF-8, 1..MaxKeyLen bytes, no NUL; by convention "collection/id") and a
// JSON value of at most MaxValueLen bytes, kept canonical (compact, object
// keys sorted bytewise, numbers as written; CanonicalJSON), so equal data is
// equal bytes. Whole data sets travel as NDJSON, one {"key":…,"value":…} per
// line in any order (ReadNDJSON validates and sorts with bounded memory).
//
// The canonical stream of a version is its records sorted by key, each
// written as uvarint(len key) key uvarint(len value) value (AppendRecord,
// StreamReader). It has exactly one encoding, so its hash identifies the
// content whatever produced it.
//
// The Chunker cuts the stream into content-defined chunks (a FastCDC gear
// hash with normalized chunking; DefaultChunkerParams: min 2 KiB, average
// 8 KiB, max 64 KiB) whose boundaries fall only between records: when the
// cut condition fires inside a record the chunk ends after it, and only a
// record bigger than the maximum is cut inside, by byte-level CDC. Editing
// one record therefore changes the chunk holding it and nothing else. Each
// chunk is named by a ChunkID, a 128-bit xxhash-based hash keyed with the
// deployment secret and scoped to the (org, user), so IDs and object names
// say nothing about content across users or deployments (Hasher).
//
// The chunks a version introduces are compressed one zstd frame each (with
// its checksum) and appended to pack objects of at most about 16 MiB
// (BuildOptions.PackSize), so a build costs a handful of writes whatever
// its chunk count; readers fetch frames with ranged GETs, coalescing
// neighbours (Reader). A pack is named after the chunk IDs it holds; if
// that name is taken, it gets a random suffix rather than reusing the
// existing object, whose age gc would misjudge.
//
// The Manifest of a version lists its chunks in stream order (ID, SHA-256,
// raw size, record count, first key, pack and offset) with the version's
// metadata: org, user, version, parent, chunker name and parameters,
// record count, stream length, creation time, the key of its change set,
// and the stream hash (SHA-256 over the chunks' SHA-256 digests, a hash list
// of the canonical stream: a client proves its rebuild byte-identical with
// it, and a patch can recompute it without reading the whole data set). It
// is binary: magic "DSMF", a format byte (ManifestFormat), an uncompressed
// header (ReadManifestHeader reads only that prefix), then one zstd frame.
//
// A version is a manifest in the store. Versions are numbered 1, 2, 3 …
// per user; version 0 is the empty set and has no manifest. Build (a whole
// data set) and ApplyEdits (a few keys, re-chunking only their
// neighbourhood, with the same result a full build would give) write the
// packs and return an uncommitted manifest; Commit claims its number. The
// change set that produced a version (package diff) is written before the
// claim and named in the manifest.
//
// # The Store contract
//
// Store is a flat namespace of objects under slash-separated keys
// (ValidateObjectKey): Get, GetRange, Put, PutIfAbsent, PutIfMatch, Stat,
// List and ListAfter (lexical order) and Delete, every call taking a
// context. Writes are
// atomic: a reader sees the whole old object or the whole new one. Errors
// match the sentinels of errors.go (ErrNotExist, ErrExist, ErrPrecondition,
// ErrCorrupt, ErrInvalid, ErrUnavailable), translated at each backend's
// boundary; ObjectError and ChunkError name what they concern.
//
// Two conditional writes carry the concurrency design, since servers keep no
// state and any number of replicas and builders share one store:
//
//   - PutIfAbsent (create-only, If-None-Match: * on S3): of any number of
//     concurrent writers exactly one wins, the others get ErrExist and
//     change nothing. Commit claims version n with it; the loser re-reads
//     the head and builds or replays again (RetryLostRace, with a jittered
//     backoff, is that loop for every writer). The deployment
//     secret, packs, change sets and patch answers are written with it too.
//   - PutIfMatch (compare-and-swap, If-Match): replaces an object only if
//     its ETag is unchanged. Org settings are updated with it.
//
// The head object is only a hint (a plain Put after the claim): Head trusts
// the highest manifest that exists, probing upward from the hint, and lists
// the versions when the hint is unusable, or missing while version 1 is
// gone too (gc retired it).
//
// A store that accepts conditional headers but does not enforce them would
// lose versions silently, so servers, builders and gc run
// ProbeConditionalWrites at start-up: a second create-only put of one key
// must fail, a compare-and-swap with a wrong ETag must fail and one with
// the current ETag succeed (GuaranteeError otherwise).
//
// The backends are snapshot/fsstore (a local directory, the embedded
// default), snapshot/s3store (S3-compatible storage through minio-go, the
// only importer of minio-go) and snapshot/memstore (tests); all pass the
// conformance suite snapshot/storetest. snapshot/deadline wraps any store
// so that no call outlives a budget, and snapshot/storeurl opens one from a
// URL.
//
// Store is the composition of role interfaces, and a function that needs
// less than a whole Store asks for a role, so its signature says what it
// may do to the store: Getter (reads objects: ReadManifest, NewReader),
// Lister (lists keys), ReadStore (reads and lists, changes nothing: Head,
// diff.ReadFeed), Creator (create-only writes), Swapper (compare-and-swap),
// Deleter, and CreateStore (reads and adds, never replaces nor removes:
// Build, ApplyEdits). What overwrites blindly (Commit's head hint, with
// Put) or plays most roles (the start-up probe, a patch replay) takes a
// whole Store.
//
// # Object layout
//
// Org and user names (ValidateName) never start with "_" or ".", so the
// reserved names below cannot collide with them, and no key escapes its
// directory. Version numbers in keys are zero-padded to 20 digits so that
// lexical order is numeric order.
//
//	_deltasync/secret                           deployment chunk-ID secret (SecretKey), created once, create-only
//	_deltasync/probe/<time>-<random>            start-up probe of conditional writes (ProbePrefix), deleted after
//	_deltasync/readyz-probe                     Stat-ed by a server's /readyz; never written
//	_deltasync/leases/<name>.json               deployment-wide lease (LeaseKey): holder and expiry, create-only then compare-and-swap
//	_consumers/<org>/<name>.json                a registered consumer of an org's change feed (ConsumerKey): its acknowledged cursor, compare-and-swap
//	_feed/<yyyymmddhh>/<ms>~<org>~<user>~<n>~<nonce>.changes
//	                                            change set of version n (FeedKey), zstd JSON
//	<org>/_settings.json                        org settings and offline policy (OrgSettingsKey), compare-and-swap
//	<org>/_blobs/<sha256 hex>                   content of a blob (BlobKey), shared by the org's users, create-only
//	<org>/<user>/head                           head hint (HeadKey): a decimal version number
//	<org>/<user>/versions/<n>.manifest          manifest of version n (ManifestKey), create-only: the claim
//	<org>/<user>/packs/<hex>[-<nonce>].pack     pack of zstd-framed chunks (PackKey), create-only
//	<org>/<user>/patches/<hash>.json            stored answer to a patch id (PatchKey), create-only
//	<org>/<user>/patches/<hash>.intent.json     mark of a patch id about to commit, create-only
//	<org>/<user>/blobs/<sha256 hex>             grant: the user may read the blob (BlobGrantKey), empty
//	<org>/<user>/uploads/<sha256 hex>/info.json blob upload in progress (BlobUploadInfoKey)
//	<org>/<user>/uploads/<sha256 hex>/<offset>.part
//	                                            bytes of an upload from offset, 20 digits (BlobPartKey)
//
// The change feed is every version's change set under FeedPrefix, named so
// that a lexical listing is creation order (hour bucket, then milliseconds,
// a version never before its parent): the app's backend reads it with a
// cursor (diff.ReadFeed). A change set is written before its version is claimed,
// under a name unique to its writer (the nonce), so the loser of a version
// race leaves an unreferenced feed entry, which the feed skips because no
// manifest names it, instead of overwriting the winner's.
//
// Packs are shared: a version references its parent's packs for every
// chunk it keeps, so a pack lives while any retained version names it.
// package gc removes versions outside retention and the packs and feed
// entries no remaining version references, but never a version whose feed
// entry a registered consumer of its org has not acknowledged (its cursor
// is before the entry's name), and blobs no remaining version references
// (after a grace period, never one being uploaded; see package gc); it
// never touches the secret, settings, consumers, leases, head hints, patch
// answers or uploads in progress.
package snapshot
