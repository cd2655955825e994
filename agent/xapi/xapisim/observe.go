package xapisim

// Waiting is the number of event.from calls blocked on the server right now.
// A test starts Play once its client waits, so that even the first write
// batch is observed (speed 0 only waits for clients it has seen calling).
func (s *Server) Waiting() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.waiters)
}
