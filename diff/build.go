package diff

import (
	"context"

	"github.com/deltasync/deltasync/snapshot"
)

// BuildVersion builds sorted records into the next version of a user's data
// set, stores the record-level change set from its parent, and claims the
// version. An unchanged data set creates nothing (res.Unchanged). If another
// writer claimed the version meanwhile, the error matches snapshot.ErrExist
// and nothing this call wrote is visible to readers.
func BuildVersion(ctx context.Context, s snapshot.Store, opts snapshot.BuildOptions, src snapshot.RecordSource) (*snapshot.BuildResult, *ChangeSet, error) {
	res, err := snapshot.Build(ctx, s, opts, src)
	if err != nil || res.Unchanged {
		return res, nil, err
	}
	cs := &ChangeSet{Kind: KindBuild, Full: res.Parent == nil}
	if res.Parent != nil {
		cs.Changes, err = Manifests(res.Parent, res.Manifest).Records(ctx,
			snapshot.NewReader(s, res.Parent, opts.Secret), snapshot.NewReader(s, res.Manifest, opts.Secret))
		if err != nil {
			return nil, nil, err
		}
	}
	if err := commitVersion(ctx, s, res.Manifest, res.Parent, cs); err != nil {
		return nil, nil, err
	}
	return res, cs, nil
}
