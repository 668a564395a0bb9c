package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/wire"
)

// family measures one family on Options.Seed: its initial sync, then its
// scenarios one after the other, each a patch from one device and a sync
// of another.
func (r *run) family(ctx context.Context, f family) error {
	r.logf("generating %d bytes of %s data (seed %d)", r.o.Size, f.name, r.o.Seed)
	recs := f.dataset(gen.Options{Size: r.o.Size, Seed: r.o.Seed})
	r.logf("building version 1")
	if f.name == families[0].name {
		if err := r.measureBuild(ctx, f.name, recs); err != nil {
			return err
		}
	} else if err := r.build(ctx, f.name, recs); err != nil {
		return err
	}
	is, err := r.measureInitial(ctx, f.name, r.o.Seed, f.name, recs)
	if err != nil {
		return err
	}
	if f.name == families[0].name {
		r.rep.InitialSync, r.rep.InitialZstd = is.SyncBytes, is.ZstdBytes
	}
	c := r.client(f.name)
	cur, version := recs, uint64(1)
	for _, sc := range f.scenarios(r.o.Seed) {
		next := sc.Apply(cur)
		row, err := r.scenario(ctx, c, f.name, sc.Name, version, cur, next)
		if err != nil {
			return fmt.Errorf("%s: %w", sc.Name, err)
		}
		r.logf("%-6s %-24s up %8d  down %8d (format 2: %8d)", f.name, sc.Name, row.UpBytes, row.DownBytes, row.DownFormat2)
		r.pairs = append(r.pairs, versionPair{row: len(r.rep.Scenarios), old: cur, new: next})
		r.rep.Scenarios = append(r.rep.Scenarios, row)
		cur, version = next, row.Version
	}
	if f.name == families[0].name {
		row, _, err := runBlobScenario(ctx, c, r.enc, r.o.Seed, version, cur, r.o.Compare) // blob.go
		if err != nil {
			return err
		}
		row.Family = f.name
		r.logf("%-6s %-24s up %8d  down %8d", f.name, row.Name, row.UpBytes, row.DownBytes)
		r.rep.Scenarios = append(r.rep.Scenarios, row)
	}
	return nil
}

// measureBuild builds version 1 of the first family and compares the
// build's throughput with single-threaded zstd -3 of the same stream.
func (r *run) measureBuild(ctx context.Context, user string, recs []gen.Record) error {
	stream := streamOf(recs)
	r.rep.Records, r.rep.StreamBytes = len(recs), int64(len(stream))
	t0 := time.Now()
	r.enc.EncodeAll(stream, nil)
	zsec := time.Since(t0).Seconds()
	r.rep.ZstdMBps = float64(len(stream)) / 1e6 / zsec
	t0 = time.Now()
	if err := r.build(ctx, user, recs); err != nil {
		return err
	}
	bsec := time.Since(t0).Seconds()
	r.rep.BuildMBps = float64(len(stream)) / 1e6 / bsec
	r.rep.BuildRatio = zsec / bsec
	return nil
}

// measureInitial downloads version 1 of user (recs) from nothing.
func (r *run) measureInitial(ctx context.Context, fam string, seed int64, user string, recs []gen.Record) (InitialSync, error) {
	r.logf("initial sync of %s seed %d", fam, seed)
	d, err := r.client(user).sync(ctx, 0, 1, wire.DeltaFormat)
	if err != nil {
		return InitialSync{}, err
	}
	stream := streamOf(recs)
	is := InitialSync{Family: fam, Seed: seed, Records: len(recs), StreamBytes: int64(len(stream)),
		SyncBytes: d.total, ZstdBytes: int64(len(r.enc.EncodeAll(stream, nil))), Download: d.breakdown}
	is.Ratio = float64(is.SyncBytes) / float64(is.ZstdBytes)
	if r.o.ZstdBinary != "" {
		if is.CZstdBytes, err = r.cZstd(ctx, stream); err != nil {
			return is, err
		}
		is.CZstdRatio = float64(is.SyncBytes) / float64(is.CZstdBytes)
	}
	r.rep.InitialSyncs = append(r.rep.InitialSyncs, is)
	return is, nil
}

// initialSyncs measures the initial sync of the other seeds of each family.
func (r *run) initialSyncs(ctx context.Context) error {
	for _, f := range families {
		for k := 1; k < r.o.Seeds; k++ {
			seed := r.o.Seed + int64(k)
			user := fmt.Sprintf("%s-seed%d", f.name, seed)
			recs := f.dataset(gen.Options{Size: r.o.Size, Seed: seed})
			if err := r.build(ctx, user, recs); err != nil {
				return err
			}
			if _, err := r.measureInitial(ctx, f.name, seed, user, recs); err != nil {
				return err
			}
		}
	}
	return nil
}

// scenario sends the change from cur to next as one device's patch, then
// syncs another device from the version before (in both formats) and from
// nothing.
func (r *run) scenario(ctx context.Context, c *client, fam, name string, version uint64, cur, next []gen.Record) (Scenario, error) {
	p := patchFor(fmt.Sprintf("bench-%s-%s-%d", fam, name, r.o.Seed), version, cur, next)
	body, _ := json.Marshal(p)
	body = r.enc.EncodeAll(body, nil)
	t0 := time.Now()
	resp, up, err := c.do(ctx, "POST", "/v1/patches", c.tok, body, "zstd")
	if err != nil {
		return Scenario{}, err
	}
	row := Scenario{Family: fam, Name: name, Ops: len(p.Ops), UpBytes: up, ApplyMillis: float64(time.Since(t0).Microseconds()) / 1000}
	var pr wire.PatchResponse
	if err := json.Unmarshal(resp, &pr); err != nil {
		return row, fmt.Errorf("patch answer: %w", err)
	}
	row.Version = pr.Version
	d, err := c.sync(ctx, version, pr.Version, wire.DeltaFormat)
	if err != nil {
		return row, err
	}
	row.DownBytes, row.Down, row.SyncMillis = d.total, d.breakdown, d.millis
	if d, err = c.sync(ctx, version, pr.Version, wire.DeltaFormat2); err != nil {
		return row, err
	}
	row.DownFormat2 = d.total
	if d, err = c.sync(ctx, 0, pr.Version, wire.DeltaFormat); err != nil {
		return row, err
	}
	row.FullBytes = d.total
	if r.o.Compare {
		row.ZstdBytes = int64(len(r.enc.EncodeAll(streamOf(next), nil)))
	}
	return row, nil
}

// patchFor expresses the change from cur to next as a client would send it:
// a merge of the changed top-level fields of an edited object, a put of a
// new record, a delete of a removed one.
func patchFor(id string, base uint64, cur, next []gen.Record) *diff.Patch {
	p := &diff.Patch{ID: id, Base: base}
	i, j := 0, 0
	for i < len(cur) || j < len(next) {
		switch {
		case j >= len(next) || i < len(cur) && cur[i].Key < next[j].Key:
			p.Ops = append(p.Ops, diff.Op{Op: diff.OpDelete, Key: cur[i].Key})
			i++
		case i >= len(cur) || next[j].Key < cur[i].Key:
			p.Ops = append(p.Ops, diff.Op{Op: diff.OpPut, Key: next[j].Key, Value: next[j].Value})
			j++
		default:
			if !bytes.Equal(cur[i].Value, next[j].Value) {
				p.Ops = append(p.Ops, editOp(cur[i], next[j]))
			}
			i++
			j++
		}
	}
	return p
}

func editOp(old, new gen.Record) diff.Op {
	var a, b map[string]json.RawMessage
	if json.Unmarshal(old.Value, &a) != nil || json.Unmarshal(new.Value, &b) != nil {
		return diff.Op{Op: diff.OpPut, Key: new.Key, Value: new.Value}
	}
	mp := map[string]json.RawMessage{}
	for k, v := range b {
		if !bytes.Equal(a[k], v) {
			mp[k] = v
		}
	}
	for k := range a {
		if _, ok := b[k]; !ok {
			mp[k] = json.RawMessage("null")
		}
	}
	patch, _ := json.Marshal(mp)
	return diff.Op{Op: diff.OpMerge, Key: new.Key, Patch: patch}
}
