package diff

// Event is one entry of an org's change feed as the app's backend reads it
// (GET /v1/admin/orgs/{org}/changes, and the body of a webhook delivery):
// who changed what in which version, from where, and what became of each
// op.
type Event struct {
	// Cursor is the entry's position: pass it as `after` to read on from
	// behind it, or acknowledge it as a consumer's cursor.
	Cursor  string `json:"cursor"`
	Org     string `json:"org"`
	User    string `json:"user"`
	Version uint64 `json:"version"`
	Parent  uint64 `json:"parent"`
	// Source is SourceDevice (a device's patch), SourceAdmin (an admin
	// patch) or SourceBuild (a whole data set: deltasync build or an
	// admin upload).
	Source string `json:"source"`
	// PatchID is the id of the patch that made the version (none for a
	// build).
	PatchID string `json:"patch_id,omitempty"`
	// CreatedUnix is when the version was made, by the server's clock.
	CreatedUnix int64 `json:"created_unix"`
	// Ops are the patch's ops in order, each with its receipt; an op's
	// Edit.At is the device's time of the edit, where the device said.
	Ops []EventOp `json:"ops,omitempty"`
	// Changes are the records as changed: old and new value per key (nil:
	// absent). Full marks a data set's first version, whose records are
	// all new and not repeated here.
	Changes []Change `json:"changes"`
	Full    bool     `json:"full,omitempty"`
}

// EventOp is one op of a patch and what became of it.
type EventOp struct {
	Edit    Op      `json:"edit"`
	Receipt Receipt `json:"receipt"`
}

// NewEvent turns a feed entry into an Event.
func NewEvent(e FeedEntry) Event {
	cs := e.ChangeSet
	ev := Event{
		Cursor: e.Cursor, Org: cs.Org, User: cs.User, Version: cs.Version, Parent: cs.Parent,
		Source: cs.Source(), CreatedUnix: cs.CreatedUnix, Changes: cs.Changes, Full: cs.Full,
	}
	if ev.Changes == nil {
		ev.Changes = []Change{}
	}
	if cs.Patch != nil {
		ev.PatchID = cs.Patch.ID
		ev.Ops = make([]EventOp, len(cs.Patch.Ops))
		for i, op := range cs.Patch.Ops {
			ev.Ops[i].Edit = op
			if i < len(cs.Receipts) {
				ev.Ops[i].Receipt = cs.Receipts[i]
			}
		}
	}
	return ev
}
