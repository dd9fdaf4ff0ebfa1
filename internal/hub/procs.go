package hub

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tracklink/tracklink/internal/bittorrent"
)

// The process registry: what the hub knows of each process of each node
// id, indexed by node, so that finding the live nodes (once per message) is
// one step per node, not per process, however many sessions a node opened.
// A node's key holder can open any number of sessions (each a new process
// to the hub), so the processes of one node id are capped
// (Config.MaxProcesses): a message from a further new session is refused
// (too_many_processes) until older ones are forgotten. Everything here is
// guarded by h.mu.

// DefaultMaxProcesses is how many processes one node id may have at the hub
// at once (replicas, and sessions a replica opened after a failed publish,
// until they are forgotten): far above any real deployment's replicas of
// one tracker, far below what costs the hub memory or its status size.
const DefaultMaxProcesses = 256

// nodeProcs is one node id at the hub: its processes, when the latest of
// them was heard and on which member's channel, and the gate on the
// resyncs it may ask for.
type nodeProcs struct {
	procs  map[uint64]*procState
	last   time.Time
	member *member
	gate   resyncGate
}

// proc returns the state of process k, or nil.
func (h *Hub) proc(k procKey) *procState {
	if np := h.nodes[k.node]; np != nil {
		return np.procs[k.session]
	}
	return nil
}

// addProc records a new process; false when its node has MaxProcesses
// already.
func (h *Hub) addProc(k procKey, st *procState) bool {
	np := h.nodes[k.node]
	if np == nil {
		np = &nodeProcs{procs: map[uint64]*procState{}}
		h.nodes[k.node] = np
	}
	if _, ok := np.procs[k.session]; !ok && len(np.procs) >= h.cfg.MaxProcesses {
		return false
	}
	np.procs[k.session] = st
	np.heard(st)
	return true
}

// heard takes st's LastHeartbeat (just set) as its node's latest sign of
// life, if it is.
func (np *nodeProcs) heard(st *procState) {
	if !st.left && !st.LastHeartbeat.Before(np.last) {
		np.last, np.member = st.LastHeartbeat, st.member
	}
}

// dropProcs removes the processes for which drop says so, and the nodes
// left with none (their gate with them: a node silent for the node timeout
// starts afresh). It returns the keys removed.
func (h *Hub) dropProcs(drop func(procKey, *procState) bool) []procKey {
	var gone []procKey
	for node, np := range h.nodes {
		changed := false
		for sess, st := range np.procs {
			if k := (procKey{node, sess}); drop(k, st) {
				delete(np.procs, sess)
				gone = append(gone, k)
				changed = true
			}
		}
		switch {
		case len(np.procs) == 0 && !np.gate.pending:
			delete(h.nodes, node)
		case changed:
			np.last, np.member = time.Time{}, nil
			for _, st := range np.procs {
				np.heard(st)
			}
		}
	}
	return gone
}

// eachProc calls f for every process, in no order.
func (h *Hub) eachProc(f func(procKey, *procState)) {
	for node, np := range h.nodes {
		for sess, st := range np.procs {
			f(procKey{node, sess}, st)
		}
	}
}

// PublicProcesses bounds the processes listed per node in the public
// status: the live ones, most recently heard first. The count of all is
// given beside them, and the admin panel lists every one.
const PublicProcesses = 64

// PublicStatus is Status for the public port: per node, only its live
// processes, at most PublicProcesses, so that its size is bounded by the
// node ids the network has, whatever their key holders do.
func (h *Hub) PublicStatus() Status {
	s := h.Status()
	for id, n := range s.Nodes {
		type kp struct {
			k string
			p ProcessStatus
		}
		var live []kp
		for k, p := range n.Processes {
			if p.Live {
				live = append(live, kp{k, p})
			}
		}
		slices.SortFunc(live, func(a, b kp) int {
			return cmp.Or(b.p.LastHeartbeat.Compare(a.p.LastHeartbeat), cmp.Compare(a.k, b.k))
		})
		n.Processes = map[string]ProcessStatus{}
		for _, e := range live[:min(len(live), PublicProcesses)] {
			n.Processes[e.k] = e.p
		}
		s.Nodes[id] = n
	}
	return s
}

func (k procKey) String() string { return fmt.Sprintf("%s/%016x", k.node, k.session) }

// forgettable reports whether st may be forgotten: not heard from for the
// node timeout, and nothing it sent passes the freshness check any more (a
// message claims a time within the skew of the hub's clock, so one sent
// by a node whose clock runs ahead passes until its claimed time plus the
// skew; forgotten before that, its replay would pass as a new process).
func (h *Hub) forgettable(st *procState, now time.Time) bool {
	return (st.left || now.Sub(st.LastHeartbeat) > h.cfg.NodeTimeout) && now.UnixMilli() > st.claimed+h.cfg.Link.MaxSkew.Milliseconds()
}

// left takes process k, which said bye, out of its node's liveness at
// once: the hub relays to it no more. Its state stays until nothing it
// sent passes the freshness check (forgettable), so a replay of its
// messages is refused. h.mu is held.
func (h *Hub) left(k procKey, st *procState) {
	st.left = true
	np := h.nodes[k.node]
	if np == nil {
		return
	}
	np.last, np.member = time.Time{}, nil
	for _, other := range np.procs {
		np.heard(other)
	}
}

// processState says what the status shows of a process: live (heard
// within three heartbeats), silent (not since, but still relayed to until
// the node timeout), left (it said bye), gone (past the node timeout, not
// yet forgotten).
func (h *Hub) processState(st *procState, now time.Time) string {
	switch since := now.Sub(st.LastHeartbeat); {
	case st.left:
		return "left"
	case since >= h.cfg.NodeTimeout:
		return "gone"
	case since > 3*h.cfg.Link.Heartbeat:
		return "silent"
	}
	return "live"
}

// parseProc reads one field of a member's registry of processes (procsKey):
// "<node>/<session hex>" = "<started ms> <last seq> <last heard ms>
// [<latest claimed ms>]" (a hub before the fourth value wrote three: the
// claimed time is then taken as the latest it could have been). A member's
// Redis is another operator's: a field that does not parse, or whose times
// lie ahead of now beyond the skew, is an error.
func parseProc(field, v string, mb *member, now time.Time, skew time.Duration) (procKey, *procState, error) {
	node, sess, ok := strings.Cut(field, "/")
	if !ok || bittorrent.ValidName("node", node) != nil || len(sess) != 16 {
		return procKey{}, nil, fmt.Errorf("process %q: not <node>/<session>", field)
	}
	session, err := strconv.ParseUint(sess, 16, 64)
	if err != nil {
		return procKey{}, nil, fmt.Errorf("process %q: %w", field, err)
	}
	f := strings.Fields(v)
	if len(f) != 3 && len(f) != 4 {
		return procKey{}, nil, fmt.Errorf("process %q: %d values, want 3 or 4", field, len(f))
	}
	var n [4]int64
	for i, s := range f {
		if n[i], err = strconv.ParseInt(s, 10, 64); err != nil || n[i] < 0 {
			return procKey{}, nil, fmt.Errorf("process %q: value %q", field, s)
		}
	}
	started, seq, last, claimed := n[0], n[1], n[2], n[3]
	ahead := now.Add(skew).UnixMilli()
	if len(f) == 3 {
		claimed = min(last+skew.Milliseconds(), ahead)
	}
	if started > ahead || last > ahead || claimed > ahead+skew.Milliseconds() || started > last {
		return procKey{}, nil, fmt.Errorf("process %q: times ahead of the hub's clock", field)
	}
	st := &procState{member: mb, claimed: claimed,
		ProcessCounts: ProcessCounts{LastSeq: uint64(seq), LastHeartbeat: time.UnixMilli(last), Started: time.UnixMilli(started)}}
	st.ctl = seqWindow{last: uint64(seq), heard: st.LastHeartbeat}
	return procKey{node, session}, st, nil
}
