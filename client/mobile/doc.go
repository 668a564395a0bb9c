// Package mobile is the deltasync client for Android and iOS apps: a façade
// over package client made for gomobile, whose every exported function,
// method, type, field and constant binds to Java (Kotlin) and Objective-C
// (Swift) with nothing skipped. Go apps use package client.
//
// # What binds
//
// gobind passes strings, []byte, bool, signed integers, pointers to structs
// of this package, and interfaces of this package; functions return at most
// one value and an error. So:
//
//   - Open(dir, *Config) opens the state directory; NewConfig gives the
//     defaults. There is no context.Context: Cancel ends the calls that use
//     the network (Sync, Pull, Push, Rebase, Wipe), and
//     Config.CallTimeoutMillis bounds each of them.
//   - Every number is an int64 (Kotlin Long, Swift Int64): versions, byte
//     counts, times (unix seconds unless the name says millis), counts.
//   - Values are JSON as []byte (Kotlin ByteArray, Swift Data).
//   - Lists are objects with Len and indexed getters (Records, Conflicts,
//     BlockedEdits, Change's keys and collections); GetMany takes a
//     KeyList.
//   - Callbacks are interfaces the app implements: StatusListener,
//     ChangeListener, TokenProvider. They are called on Go's threads, one
//     at a time per listener kind, in order; hop to the UI thread to draw.
//   - Errors become exceptions (Java) or NSError (Swift); ErrorCode
//     classifies one (CodeAuth, CodeNoConnection, …). Get returns nil
//     (null) for a key without a value instead of failing.
//
// The bindings are generated and checked in CI: scripts/test installs the
// pinned gobind into .bin, and this package's tests fail on any item gobind
// skips (Java and Objective-C), compile the Java with javac and run a Java
// program against a real `deltasync serve` through JNI on Linux, and check
// the README's Kotlin and Swift snippets against the generated names.
package mobile
