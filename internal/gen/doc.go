// Package gen generates realistic, deterministic data sets of a
// work-management app for tests, benchmarks and the `deltasync gen` and
// `deltasync bench` commands.
//
// A data set is selected by Options: a target size in bytes of its NDJSON
// form and a seed. The same Options always give byte-identical output, on
// every platform and Go version that keeps math/rand/v2's PCG stable, so a
// test or a benchmark can name its input instead of committing it.
//
// The records imitate what one user of an org sees offline, keyed
// collection/id (tasks/t0000042): users, groups and channels first, then a
// stream of messages (with reactions, mentions and threads), tasks (status,
// assignee, due date, tags, checklist and a nested custom object) and form
// submissions (nested answers), with photo attachments spread evenly through
// it. Attachments hold 20–200 KiB of incompressible bytes as base64 and make
// up about 10% of the output, as photos taken in the field do. Text is drawn
// from a fixed vocabulary with a skew towards common words, so the rest
// compresses about as well as real text (zstd -3 gives roughly 4x). Values
// are written with sorted object keys and no extra whitespace, which is the
// canonical form the snapshot layer stores, so generated values pass through
// canonicalisation unchanged.
//
// Each streams records in generation order, Generate writes them as NDJSON,
// and Dataset returns them sorted by key for tests that hold a whole set in
// memory.
//
// The edit functions (EditOneField, EditScattered, InsertInterleaved,
// DeleteRandom, AddAttachment, ChangeFraction) model what users do to a data
// set between two versions. Each takes sorted records and a seed and returns
// a new sorted slice without touching its input, so one base data set can be
// edited many ways. Scenarios lists the set that the bench command measures.
//
// The package stands alone: it imports no other deltasync package, so any of
// them can use it in tests.
package gen
