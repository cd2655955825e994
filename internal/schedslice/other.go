//go:build !linux

package schedslice

import "time"

// Set does nothing here.
func Set(d time.Duration) error { return ErrUnsupported }

// Get does nothing here.
func Get() (time.Duration, error) { return 0, ErrUnsupported }
