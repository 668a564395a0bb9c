// Package batch builds versions of many users' data sets from NDJSON
// exports: the library behind `deltasync build`.
//
// BuildUser builds one user's next version from an NDJSON stream. The input
// is validated and sorted with bounded memory (snapshot.ReadNDJSON), built
// and claimed (diff.BuildVersion), and the result is reported with the store
// requests it cost (a snapshot.CountingStore around the store). A data set
// equal to the head creates nothing and writes nothing. If another writer
// claims the version number first, the sorted input is read again and built
// on the new head, a bounded number of times.
//
// BuildDir does the same for every DIR/<org>/<user>.ndjson (or .ndjson.zst)
// with a bounded number of users in parallel. A bad file fails only its own
// user; the others still build. A Shard keeps only the users whose name
// hashes to it, so n jobs given shards 0/n … n-1/n split the users between
// them without coordination.
//
// Re-running after a crash is safe and finishes the rest: a version becomes
// visible only when its manifest is claimed with a create-only write, after
// its packs and change set are stored; pack names derive from their content,
// so a re-run rewrites the same objects instead of adding new ones; and a
// user whose data set equals its head (because the killed run had already
// claimed it) creates no second version.
package batch
