// linzcheck - checks a history recorded by linz_record (tests/linz/record.c)
// against DESIGN.md's contract with Porcupine.
//
// Usage: linzcheck -mode embedded|cluster [-html FILE] [-timeout D] HISTORY
//
// HISTORY is JSON Lines, one operation a line (see history.go). The model
// is a key-value store with versions (model.go), partitioned by key.
//
// Mode embedded (one node, the store of record serves every read): the whole
// history, reads included, must be linearizable.
//
// Mode cluster (nodes serve reads from caches that are updated
// asynchronously): the writes alone must be linearizable; every read must
// return a version and value that some write produced, and no sooner than
// that write was called; per client (each pinned to one node), reads never
// go back to an older version and a client reads its own acknowledged
// writes (reads.go).
//
// Exit status: 0 when the history passes, 1 on a violation (with -html,
// Porcupine's visualization is written there: of the whole history, or in
// cluster mode of the writes, with each bad read as an annotation), 2 on a
// usage or input error, 3 when the search ran out of time (no verdict).
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/anishathalye/porcupine"
)

func main() {
	mode := flag.String("mode", "", "embedded or cluster")
	html := flag.String("html", "", "write Porcupine's visualization here on a violation")
	timeout := flag.Duration("timeout", 5*time.Minute, "give up the linearizability search after this long")
	flag.Parse()
	if flag.NArg() != 1 || (*mode != "embedded" && *mode != "cluster") {
		fmt.Fprintln(os.Stderr, "usage: linzcheck -mode embedded|cluster [-html FILE] [-timeout D] HISTORY")
		os.Exit(2)
	}
	h, err := loadHistory(flag.Arg(0))
	if err != nil {
		fmt.Fprintf(os.Stderr, "linzcheck: %v\n", err)
		os.Exit(2)
	}
	os.Exit(run(h, *mode, *html, *timeout))
}

// run checks h in mode and prints a summary; it returns the exit status.
func run(h *history, mode, html string, timeout time.Duration) int {
	fmt.Printf("linzcheck: %s\n", h.summary())
	if bad := h.unexpected(); len(bad) > 0 {
		for _, r := range bad {
			fmt.Printf("VIOLATION: answer outside the contract: %s\n", r.describe())
		}
		return 1
	}
	var ops []porcupine.Operation
	what := "the whole history"
	if mode == "embedded" {
		ops = h.operations(true)
	} else {
		ops = h.operations(false)
		what = "the writes"
	}
	res := checkLinearizable(ops, what, timeout)
	var bad []readViolation
	if mode == "cluster" {
		bad = checkReads(h)
		for _, v := range bad {
			fmt.Printf("VIOLATION: %s\n", v.msg)
		}
		if len(bad) == 0 {
			fmt.Printf("linzcheck: reads: every read returned a written version, none went back, every client read its own writes\n")
		}
	}
	if res != porcupine.Illegal && len(bad) == 0 {
		if res == porcupine.Unknown {
			return 3
		}
		return 0
	}
	if html != "" {
		visualize(ops, bad, html, timeout)
	}
	return 1
}

// visualize writes Porcupine's visualization of ops to html, with each
// read violation as an annotation on its client's line.
func visualize(ops []porcupine.Operation, bad []readViolation, html string, timeout time.Duration) {
	_, info := porcupine.CheckOperationsVerbose(kvModel, ops, timeout)
	var notes []porcupine.Annotation
	for _, v := range bad {
		notes = append(notes, porcupine.Annotation{
			ClientId:        v.rec.Client,
			Start:           v.rec.Call,
			End:             v.rec.Ret,
			Description:     "bad read: " + describeOutput(v.rec.output()),
			Details:         v.msg,
			BackgroundColor: "#f4a6a6",
		})
	}
	info.AddAnnotations(notes)
	if err := porcupine.VisualizePath(kvModel, info, html); err != nil {
		fmt.Fprintf(os.Stderr, "linzcheck: writing %s: %v\n", html, err)
		return
	}
	fmt.Printf("linzcheck: visualization in %s\n", html)
}

// checkLinearizable runs Porcupine on ops and prints the verdict.
func checkLinearizable(ops []porcupine.Operation, what string, timeout time.Duration) porcupine.CheckResult {
	start := time.Now()
	res := porcupine.CheckOperationsTimeout(kvModel, ops, timeout)
	took := time.Since(start).Round(time.Millisecond)
	switch res {
	case porcupine.Ok:
		fmt.Printf("linzcheck: linearizable: %s (%d operations; checked in %s)\n", what, len(ops), took)
	case porcupine.Unknown:
		fmt.Printf("linzcheck: NO VERDICT: the search over %s (%d operations) ran out of -timeout %s\n", what, len(ops), timeout)
	default:
		fmt.Printf("VIOLATION: not linearizable: %s (%d operations; found in %s)\n", what, len(ops), took)
	}
	return res
}
