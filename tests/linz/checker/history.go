package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sort"

	"github.com/anishathalye/porcupine"
)

// record is one operation of a history, as linz_record writes it (one JSON
// object a line). Times are nanoseconds on one monotonic clock.
type record struct {
	Client int    `json:"client"` // client index; each client is pinned to one node
	Node   int    `json:"node"`   // index of the node the client talks to
	Key    string `json:"key"`    // the history's key: the document id, or an epoch's use of it
	Doc    string `json:"doc"`    // the document id when it is not Key (linz_record --slots)
	Op     string `json:"op"`     // read, put, put_if, tas, delete, or init (the state a reused document was reset to)
	Call   int64  `json:"call"`   // when the request was sent
	Ret    int64  `json:"ret"`    // when the answer came (meaningless when Unknown)
	Val    string `json:"val"`    // value written by put, put_if and tas
	Expect int64  `json:"expect"` // put_if: the If-Match version
	Test   string `json:"test"`   // tas: the value the `test` operation expects
	Status int    `json:"status"` // HTTP status; 0 when Unknown
	Ver    int64  `json:"ver"`    // the answer's ETag version (0: none)
	Out    string `json:"out"`    // read: the value the body holds
	// Unknown: no answer, or a 5xx, so a write may or may not have taken
	// effect (Porcupine: it returns at infinity).
	Unknown bool `json:"unknown"`
	// Exhausted: a 409 because the edit loop gave up on conflicts
	// (DESIGN.md section 3), not because a tas's test failed: it wrote
	// nothing.
	Exhausted bool `json:"exhausted"`
}

// describe renders r for a report line.
func (r *record) describe() string {
	s := fmt.Sprintf("client %d (node %d) %s", r.Client, r.Node, describeOp(r.input()))
	if r.Doc != "" {
		s += fmt.Sprintf(" [document %s]", r.Doc)
	}
	if r.Unknown {
		return s + fmt.Sprintf(" -> unknown [called at %.3f s]", float64(r.Call)/1e9)
	}
	return s + fmt.Sprintf(" -> %s [%.3f s .. %.3f s]", describeOutput(r.output()),
		float64(r.Call)/1e9, float64(r.Ret)/1e9)
}

func (r *record) input() kvInput {
	return kvInput{Key: r.Key, Op: r.Op, Val: r.Val, Expect: r.Expect, Test: r.Test}
}

func (r *record) output() kvOutput {
	return kvOutput{Status: r.Status, Ver: r.Ver, Val: r.Out, Unknown: r.Unknown,
		Exhausted: r.Exhausted}
}

func (r *record) isWrite() bool { return r.Op != "read" }

// expected lists, per operation, the statuses the contract allows for the
// requests the recorder sends (DESIGN.md sections 3 and 5). A 409 to a put
// or a delete must be the edit loop giving up on conflicts.
var expected = map[string][]int{
	"read":   {200, 404},
	"put":    {200, 201, 409},
	"put_if": {200, 412},
	"tas":    {200, 404, 409},
	"delete": {200, 404, 409},
	"init":   {200},
}

// history is a loaded history, in call order.
type history struct {
	recs []record
}

func loadHistory(path string) (*history, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := &history{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for line := 1; sc.Scan(); line++ {
		if len(sc.Bytes()) == 0 {
			continue
		}
		var r record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("%s:%d: %v", path, line, err)
		}
		if _, ok := expected[r.Op]; !ok {
			return nil, fmt.Errorf("%s:%d: unknown op %q", path, line, r.Op)
		}
		h.recs = append(h.recs, r)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	if len(h.recs) == 0 {
		return nil, fmt.Errorf("%s: no operations", path)
	}
	sort.SliceStable(h.recs, func(i, j int) bool { return h.recs[i].Call < h.recs[j].Call })
	return h, nil
}

// summary counts operations by kind and outcome.
func (h *history) summary() string {
	count := map[string]int{}
	unknown, keys, clients := 0, map[string]bool{}, map[int]bool{}
	for _, r := range h.recs {
		count[r.Op]++
		keys[r.Key] = true
		clients[r.Client] = true
		if r.Unknown {
			unknown++
		}
	}
	inits := ""
	if count["init"] > 0 {
		inits = fmt.Sprintf(", %d init", count["init"])
	}
	return fmt.Sprintf("%d operations (%d reads, %d put, %d put_if, %d tas, %d delete%s; %d unknown outcomes) by %d clients on %d keys",
		len(h.recs), count["read"], count["put"], count["put_if"], count["tas"],
		count["delete"], inits, unknown, len(clients), len(keys))
}

// unexpected returns the answers that the contract does not allow for
// their request at all, whatever the state: a status outside its list, or
// a success without a version.
func (h *history) unexpected() []*record {
	var bad []*record
	for i := range h.recs {
		r := &h.recs[i]
		if r.Unknown {
			continue
		}
		ok := false
		for _, s := range expected[r.Op] {
			ok = ok || s == r.Status
		}
		if r.Status == 409 && r.Op != "tas" && !r.Exhausted {
			ok = false
		}
		if !ok || (r.Status < 300 && r.Ver < 1) {
			bad = append(bad, r)
		}
	}
	return bad
}

// operations converts the history to Porcupine operations: every write,
// and with reads the reads that were answered (a read with no answer tells
// nothing). A write of unknown outcome returns at infinity: after every
// other operation, so it may be linearized where it would change nothing
// that was observed.
func (h *history) operations(reads bool) []porcupine.Operation {
	var end int64
	for _, r := range h.recs {
		if !r.Unknown && r.Ret > end {
			end = r.Ret
		}
		if r.Call > end {
			end = r.Call
		}
	}
	var ops []porcupine.Operation
	for i := range h.recs {
		r := &h.recs[i]
		if !r.isWrite() && (!reads || r.Unknown) {
			continue
		}
		ret := r.Ret
		if r.Unknown {
			ret = end + 1
		}
		ops = append(ops, porcupine.Operation{
			ClientId: r.Client,
			Input:    r.input(),
			Call:     r.Call,
			Output:   r.output(),
			Return:   ret,
		})
	}
	return ops
}
