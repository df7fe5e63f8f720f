package cluster

import (
	"sync"
	"time"
)

// loginGuard slows password guessing: a user whose password was wrong
// userFailuresToLock times within userFailureWindow is locked out for
// userLockout, and an address whose credentials (of any kind) failed
// addrFailuresPerMinute times in a minute is refused until the minute
// has passed. Each member keeps its own counts: credentials are checked
// where a request arrives, and a guard shared through raft would turn
// every wrong password into a write.
//
// The user lockout lets anyone who knows a user's name lock that user out
// for a while, as in vSphere; the per-address limit is what stops a
// guesser that rotates names.
type loginGuard struct {
	mu    sync.Mutex
	now   func() time.Time
	users map[string]*userFailures
	addrs map[string][]time.Time // recent failure times, oldest first
}

type userFailures struct {
	count       int
	first       time.Time
	lockedUntil time.Time
}

const (
	userFailuresToLock    = 5
	userFailureWindow     = 15 * time.Minute
	userLockout           = 5 * time.Minute
	addrFailuresPerMinute = 20
	// guardEntries bounds the memory a flood of names or addresses takes.
	guardEntries = 10000
)

func newLoginGuard(now func() time.Time) *loginGuard {
	if now == nil {
		now = time.Now
	}
	return &loginGuard{now: now, users: map[string]*userFailures{}, addrs: map[string][]time.Time{}}
}

// wait is how long addr, or user if not empty, must wait before its next
// attempt is checked at all; 0: go ahead.
func (g *loginGuard) wait(addr, user string) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	var wait time.Duration
	if times := g.recent(addr, now); len(times) >= addrFailuresPerMinute {
		wait = times[0].Add(time.Minute).Sub(now)
	}
	if f, ok := g.users[user]; ok && user != "" && now.Before(f.lockedUntil) {
		wait = max(wait, f.lockedUntil.Sub(now))
	}
	return wait
}

// recent returns addr's failures within the last minute, dropping older
// ones.
func (g *loginGuard) recent(addr string, now time.Time) []time.Time {
	times := g.addrs[addr]
	i := 0
	for i < len(times) && !times[i].After(now.Add(-time.Minute)) {
		i++
	}
	if i > 0 {
		times = times[i:]
		if len(times) == 0 {
			delete(g.addrs, addr)
		} else {
			g.addrs[addr] = times
		}
	}
	return times
}

// failed counts a failed attempt from addr, as user if it named one.
func (g *loginGuard) failed(addr, user string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	if len(g.addrs) >= guardEntries {
		g.addrs = map[string][]time.Time{}
	}
	g.addrs[addr] = append(g.recent(addr, now), now)
	if user == "" {
		return
	}
	if len(g.users) >= guardEntries {
		for name, f := range g.users {
			if now.After(f.lockedUntil) && now.Sub(f.first) > userFailureWindow {
				delete(g.users, name)
			}
		}
		if len(g.users) >= guardEntries {
			g.users = map[string]*userFailures{}
		}
	}
	f, ok := g.users[user]
	if !ok || now.Sub(f.first) > userFailureWindow {
		f = &userFailures{first: now}
		g.users[user] = f
	}
	f.count++
	if f.count >= userFailuresToLock {
		f.lockedUntil = now.Add(userLockout)
		f.count, f.first = 0, now
	}
}

// succeeded clears user's failures.
func (g *loginGuard) succeeded(user string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.users, user)
}
