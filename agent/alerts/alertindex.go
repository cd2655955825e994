package alerts

import (
	"math"
	"slices"
)

// alertIndex holds the alert times of each VM in memory, so that
// AlertedVMs (asked about a family for nearly every alert) needs no query
// of the alert log. It answers for windows that start at or after from:
// it holds every alert whose time is at least from (alerts resolved in
// this process, those in the log when it opened, and those another
// process writes to the same log, see alertLog.sync). Older windows are
// read from the log. It holds at most max entries (one per alert and VM):
// past that the oldest times go and from moves up.
//
// Measured in Enrich1MVMs: the log's query for a family's alerts was
// 9–13% of the host's CPU (every commit of the log empties the page cache
// of the connection that reads it).
type alertIndex struct {
	byVM map[string][]int64 // alert times (ms) of each VM, ascending
	from int64
	n    int
	max  int
}

// maxIndexedAlerts bounds the index: 8 bytes per entry plus the map entry
// of each VM, about 25 MB at worst (every alert naming a VM of its own),
// a few MB for alerts of a few thousand VMs. It covers a day of an
// average one alert every 0.35 s.
const maxIndexedAlerts = 250_000

func newAlertIndex(max int) *alertIndex {
	return &alertIndex{byVM: map[string][]int64{}, from: math.MinInt64, max: max}
}

// covers says whether the index answers for a window starting at s (ms).
func (x *alertIndex) covers(s int64) bool { return s >= x.from }

func (x *alertIndex) add(vm string, at int64) {
	ts := x.byVM[vm]
	i := len(ts)
	for i > 0 && ts[i-1] > at { // alerts come nearly in time order
		i--
	}
	x.byVM[vm] = slices.Insert(ts, i, at)
	x.n++
	if x.n > x.max {
		x.evict()
	}
}

// remove drops one entry of vm at time at, if there is one.
func (x *alertIndex) remove(vm string, at int64) {
	ts := x.byVM[vm]
	i, found := slices.BinarySearch(ts, at)
	if !found {
		return
	}
	if ts = slices.Delete(ts, i, i+1); len(ts) == 0 {
		delete(x.byVM, vm)
	} else {
		x.byVM[vm] = ts
	}
	x.n--
}

// count returns the first and last time and the number of vm's alerts in
// [s, u] (ms, both inclusive).
func (x *alertIndex) count(vm string, s, u int64) (first, last int64, n int) {
	ts := x.byVM[vm]
	i, _ := slices.BinarySearch(ts, s)
	j, found := slices.BinarySearch(ts, u)
	if found {
		for j < len(ts) && ts[j] == u {
			j++
		}
	}
	if i >= j {
		return 0, 0, 0
	}
	return ts[i], ts[j-1], j - i
}

// evict drops the oldest tenth of the entries (all those at or before a
// cut time, so that the index stays complete from the time after it).
func (x *alertIndex) evict() {
	all := make([]int64, 0, x.n)
	for _, ts := range x.byVM {
		all = append(all, ts...)
	}
	slices.Sort(all)
	cut := all[len(all)/10]
	for vm, ts := range x.byVM {
		i, found := slices.BinarySearch(ts, cut)
		for found && i < len(ts) && ts[i] == cut {
			i++
		}
		if i == 0 {
			continue
		}
		x.n -= i
		if i == len(ts) {
			delete(x.byVM, vm)
		} else {
			x.byVM[vm] = slices.Clone(ts[i:])
		}
	}
	x.from = max(x.from, cut+1)
}
