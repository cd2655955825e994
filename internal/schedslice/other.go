//go:build !linux

// Package schedslice sets the scheduler time slice of this process's
// threads; only Linux has one to set.
package schedslice

import (
	"errors"
	"time"
)

// The kernel's bounds on a custom slice.
const (
	Min = 100 * time.Microsecond
	Max = 100 * time.Millisecond
)

// ErrUnsupported is returned where there is no custom slice to set.
var ErrUnsupported = errors.New("schedslice: custom time slices are Linux's (6.12 or later)")

// Set does nothing here.
func Set(d time.Duration) error { return ErrUnsupported }

// Get does nothing here.
func Get() (time.Duration, error) { return 0, ErrUnsupported }
