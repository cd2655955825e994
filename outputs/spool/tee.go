package spool

import (
	"context"
	"errors"

	"github.com/vmlineage/vmlineage/outputs"
)

// Tee appends to several spools (one per output). Append returns nil only
// when every spool has the items on disk, so the tracer acknowledges its
// source once. After an error the caller appends again: spools that had
// already taken the items then hold them twice (at-least-once; Elasticsearch
// drops the copy by _id).
type Tee []*Spool

// Append appends items to every spool, all of them even if one fails.
func (t Tee) Append(ctx context.Context, items []outputs.Item) error {
	var errs []error
	for _, s := range t {
		if err := s.Append(ctx, items); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
