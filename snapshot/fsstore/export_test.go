package fsstore

import "time"

// SetClock replaces the store's clock (time.Now).
func SetClock(s *Store, now func() time.Time) { s.now = now }
