package main

import (
	"fmt"
	"hash/fnv"

	"github.com/anishathalye/porcupine"
)

// kvInput is one request on one document (DESIGN.md sections 2, 3 and 5).
type kvInput struct {
	Key    string
	Op     string // read, put (no precondition), put_if (If-Match), tas, delete, init
	Val    string // the value put, put_if and tas write
	Expect int64  // put_if: the If-Match version
	Test   string // tas: the value its `test` operation expects
}

// kvOutput is the answer; Unknown when there was none (or a 5xx).
type kvOutput struct {
	Status    int
	Ver       int64 // ETag
	Val       string
	Unknown   bool
	Exhausted bool
}

// kvState is one document: live or not, and its version, which a delete
// advances too (the tombstone takes the next version, and a re-create
// continues after it).
type kvState struct {
	Live bool
	Ver  int64
	Val  string
}

// step is the sequential specification of one request on state s. It
// returns whether the answer is possible from s, and the next state.
func step(s kvState, in kvInput, out kvOutput) (bool, kvState) {
	next := kvState{Live: true, Ver: s.Ver + 1, Val: in.Val}
	switch in.Op {
	case "init":
		// The state a reused document was reset to (linz_record --slots)
		// before any other operation on its key was called: legal only
		// as the key's first operation, so everything after it is
		// checked from that state.
		return s == kvState{} && !out.Unknown && out.Status < 300 && out.Ver > 0,
			kvState{Live: true, Ver: out.Ver, Val: in.Val}
	case "read":
		if out.Status == 404 {
			return !s.Live, s
		}
		return s.Live && s.Ver == out.Ver && s.Val == out.Val, s
	case "put":
		if out.Unknown {
			return true, next
		}
		if out.Status == 409 {
			return out.Exhausted, s
		}
		if out.Ver != next.Ver || (out.Status == 201) == s.Live {
			return false, s
		}
		return true, next
	case "put_if":
		match := s.Live && s.Ver == in.Expect
		if out.Unknown {
			if match {
				return true, next
			}
			return true, s
		}
		if out.Status == 412 {
			return !match, s
		}
		return match && out.Ver == next.Ver, next
	case "tas":
		match := s.Live && s.Val == in.Test
		if out.Unknown {
			if match {
				return true, next
			}
			return true, s
		}
		switch out.Status {
		case 404:
			return !s.Live, s
		case 409:
			// The test failed, or the edit loop gave up on conflicts:
			// nothing was written either way.
			return s.Live && (out.Exhausted || !match), s
		}
		return match && out.Ver == next.Ver, next
	case "delete":
		gone := kvState{Live: false, Ver: s.Ver + 1}
		if out.Unknown {
			if s.Live {
				return true, gone
			}
			return true, s
		}
		switch out.Status {
		case 404:
			return !s.Live, s
		case 409:
			return out.Exhausted, s
		}
		return s.Live && out.Ver == gone.Ver, gone
	}
	return false, s
}

func describeOp(in kvInput) string {
	switch in.Op {
	case "read":
		return fmt.Sprintf("get(%s)", in.Key)
	case "put":
		return fmt.Sprintf("put(%s, %q)", in.Key, in.Val)
	case "put_if":
		return fmt.Sprintf("put(%s, %q, If-Match %d)", in.Key, in.Val, in.Expect)
	case "tas":
		return fmt.Sprintf("patch(%s, test %q, replace %q)", in.Key, in.Test, in.Val)
	case "init":
		return fmt.Sprintf("init(%s, %q)", in.Key, in.Val)
	}
	return fmt.Sprintf("delete(%s)", in.Key)
}

func describeOutput(out kvOutput) string {
	switch {
	case out.Unknown:
		return "unknown"
	case out.Status == 200 && out.Val != "":
		return fmt.Sprintf("200 v%d %q", out.Ver, out.Val)
	case out.Ver > 0:
		return fmt.Sprintf("%d v%d", out.Status, out.Ver)
	case out.Exhausted:
		return "409 (retries exhausted)"
	}
	return fmt.Sprintf("%d", out.Status)
}

func describeState(s kvState) string {
	if !s.Live {
		return fmt.Sprintf("absent (v%d)", s.Ver)
	}
	return fmt.Sprintf("v%d %q", s.Ver, s.Val)
}

// kvModel is the Porcupine model: one kvState per document, partitioned
// by key; every key starts absent at version 0, or, with an init
// operation first, at the state it names.
var kvModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := op.Input.(kvInput).Key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		var parts [][]porcupine.Operation
		for _, k := range keys {
			parts = append(parts, byKey[k])
		}
		return parts
	},
	Init: func() interface{} { return kvState{} },
	Step: func(state, input, output interface{}) (bool, interface{}) {
		return step(state.(kvState), input.(kvInput), output.(kvOutput))
	},
	Hash: func(state interface{}) uint64 {
		s := state.(kvState)
		h := fnv.New64a()
		fmt.Fprintf(h, "%t/%d/%s", s.Live, s.Ver, s.Val)
		return h.Sum64()
	},
	DescribeOperation: func(input, output interface{}) string {
		return describeOp(input.(kvInput)) + " -> " + describeOutput(output.(kvOutput))
	},
	DescribeState: func(state interface{}) string { return describeState(state.(kvState)) },
}
