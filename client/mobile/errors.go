package mobile

import (
	"context"
	"errors"

	"github.com/deltasync/deltasync/client"
)

// Codes ErrorCode returns.
const (
	CodeNone         = ""              // no error
	CodeInvalid      = "invalid"       // a bad key, JSON, argument or config
	CodeTooLarge     = "too_large"     // a value over the largest record the server accepts
	CodeLocked       = "locked"        // another process holds the state directory
	CodeCorrupt      = "corrupt"       // the state file cannot be read
	CodeOfflineMode  = "offline_mode"  // offline mode is on: no network use
	CodeNotSynced    = "not_synced"    // offline mode needs a completed sync first
	CodeNoServer     = "no_server"     // no server URL configured
	CodeNoConnection = "no_connection" // the server could not be reached (retry later)
	CodeAuth         = "auth"          // the token was refused, or the TokenProvider failed
	CodeRebaseNeeded = "rebase_needed" // conflicting edits wait for Rebase or DiscardEdits
	CodePolicy       = "policy"        // refused by the organization's offline policy
	CodeServer       = "server"        // a server failure (retry later)
	CodePendingEdits = "pending_edits" // Wipe: edits have not reached the server
	CodeRunning      = "running"       // Start: background sync already runs
	CodeCancelled    = "cancelled"     // ended by Cancel
	CodeTimeout      = "timeout"       // ended by Config.CallTimeoutMillis
	CodeClosed       = "closed"        // the client was closed or wiped
	CodeOther        = "other"         // anything else (see the message)
)

var errorCodes = []struct {
	err  error
	code string
}{
	{errClosed, CodeClosed},
	{client.ErrWiped, CodeClosed},
	{client.ErrPendingEdits, CodePendingEdits},
	{context.Canceled, CodeCancelled},
	{context.DeadlineExceeded, CodeTimeout},
	{client.ErrTooLarge, CodeTooLarge},
	{client.ErrInvalid, CodeInvalid},
	{client.ErrLocked, CodeLocked},
	{client.ErrCorrupt, CodeCorrupt},
	{client.ErrOfflineMode, CodeOfflineMode},
	{client.ErrNotSynced, CodeNotSynced},
	{client.ErrNoServer, CodeNoServer},
	{client.ErrNoConnection, CodeNoConnection},
	{client.ErrAuth, CodeAuth},
	{client.ErrRebaseNeeded, CodeRebaseNeeded},
	{client.ErrPolicy, CodePolicy},
	{client.ErrServer, CodeServer},
	{client.ErrRunning, CodeRunning},
}

// ErrorCode classifies an error returned by this package (in Java, the
// exception thrown; in Swift, the NSError): one of the Code* constants, "" for
// nil. An error that fits several (a Wipe refused for want of a
// connection) gets the most specific.
func ErrorCode(err error) string {
	if err == nil {
		return CodeNone
	}
	for _, c := range errorCodes {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return CodeOther
}
