// Package layers has no code: its tests keep the module's house rules,
// which a reviewer would otherwise have to check by hand on every change.
//
//   - Imports run one way (DESIGN.md, "Layering"): cmd → server, client →
//     wire → diff → snapshot; snapshot imports none of the others; server
//     and client never import each other; only snapshot/s3store imports
//     minio-go, only server fasthttp, only the client bbolt; cmd does not
//     import the JWT libraries (server's API does not leak them), and the
//     server does not link the test-data generator (internal/gen).
//   - cmd owns configuration: no package outside cmd (test kits aside)
//     imports "flag" or reads the process environment; libraries take
//     options structs.
//   - Every package has a package doc.
//   - Tests build their fake stores on the one fake, storetest.Faults: no
//     test file implements a snapshot.Store method itself.
//   - No non-test function is longer than 80 lines: a longer one has
//     phases, and each phase is a function named for it (a short list of
//     functions still to split aside).
package layers
