package main

import "fmt"

// readViolation is a read that breaks what a cluster promises of reads.
type readViolation struct {
	rec *record
	msg string
}

// floor is what a client has seen of one document: the highest version it
// read or had acknowledged, and whether that version is a tombstone.
type floor struct {
	ver   int64
	tomb  bool
	cause *record
}

// checkReads checks the reads of a cluster history, which nodes serve from
// caches updated asynchronously, so they need not be linearizable:
//   - every answered read returns a version and value that a write produced
//     (each write puts a value no other write puts), and no sooner than
//     that write was called;
//   - per client (pinned to one node), a read never returns a version older
//     than one the client read or wrote before on that document (a read
//     after the client's own acknowledged delete may be a 404 or a later
//     version), and a 404 after the client saw version v is explained by a
//     delete of a version past v (or one of unknown outcome);
//   - with an init operation (linz_record --slots), every node served the
//     init state before any client's first operation on the key, so each
//     client starts from it as if it had read it.
//
// It returns the violations in call order.
func checkReads(h *history) []readViolation {
	var out []readViolation
	writes := map[string]map[string]*record{} // key -> value -> write
	deletes := map[string][]*record{}
	inits := map[string]*record{}
	for i := range h.recs {
		r := &h.recs[i]
		if r.Op == "init" && !r.Unknown && r.Status < 300 {
			inits[r.Key] = r
		}
		switch {
		case r.Op == "delete":
			deletes[r.Key] = append(deletes[r.Key], r)
		case r.isWrite():
			if writes[r.Key] == nil {
				writes[r.Key] = map[string]*record{}
			}
			writes[r.Key][r.Val] = r
		}
	}
	// Each client's operations, in its own order (a client has one request
	// in flight at a time, so call order is its program order).
	seen := map[int]map[string]*floor{}
	for i := range h.recs {
		r := &h.recs[i]
		if seen[r.Client] == nil {
			seen[r.Client] = map[string]*floor{}
		}
		f := seen[r.Client][r.Key]
		if f == nil {
			f = &floor{}
			if in := inits[r.Key]; in != nil {
				*f = floor{ver: in.Ver, cause: in}
			}
			seen[r.Client][r.Key] = f
		}
		if r.Unknown {
			continue
		}
		if r.isWrite() {
			if r.Status < 300 && r.Ver > f.ver {
				*f = floor{ver: r.Ver, tomb: r.Op == "delete", cause: r}
			}
			continue
		}
		if r.Status == 404 {
			if f.ver > 0 && !f.tomb && !deletedAfter(deletes[r.Key], f.ver, r.Ret) {
				out = append(out, bad(r, "%s, but the client had seen v%d (%s) and no delete past it was called before",
					r.describe(), f.ver, f.cause.describe()))
			}
			continue
		}
		w := writes[r.Key][r.Out]
		switch {
		case w == nil:
			out = append(out, bad(r, "%s: no write produced this value", r.describe()))
		case !w.Unknown && w.Status < 300 && w.Ver != r.Ver:
			out = append(out, bad(r, "%s: the write of this value made v%d (%s)", r.describe(), w.Ver, w.describe()))
		case !w.Unknown && w.Status >= 300:
			out = append(out, bad(r, "%s: the write of this value failed (%s)", r.describe(), w.describe()))
		case w.Call > r.Ret:
			out = append(out, bad(r, "%s: returned before the write of this value was called (%s)", r.describe(), w.describe()))
		}
		if r.Ver < f.ver || (f.tomb && r.Ver == f.ver) {
			what := "went back"
			if f.cause.Op == "init" {
				what = "went back behind the state every node served before the epoch"
			} else if f.cause.isWrite() {
				what = "missed the client's own acknowledged write"
			}
			out = append(out, bad(r, "%s: %s: the client had seen v%d (%s)", r.describe(), what, f.ver, f.cause.describe()))
		}
		if r.Ver > f.ver {
			*f = floor{ver: r.Ver, cause: r}
		}
	}
	return out
}

// deletedAfter tells whether a delete of a version past ver (or of unknown
// outcome) was called by time t.
func deletedAfter(deletes []*record, ver, t int64) bool {
	for _, d := range deletes {
		if d.Call <= t && (d.Unknown || (d.Status == 200 && d.Ver > ver)) {
			return true
		}
	}
	return false
}

func bad(r *record, format string, args ...interface{}) readViolation {
	return readViolation{rec: r, msg: fmt.Sprintf(format, args...)}
}
