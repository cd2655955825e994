package logsource

import (
	"context"
	"errors"
	"fmt"

	"github.com/vmlineage/vmlineage/agent/lineage"
	"github.com/vmlineage/vmlineage/agent/xensource"
)

// ErrNoPool: the store knows no pool, so records cannot get their ids.
var ErrNoPool = errors.New("logsource: the store knows no pool")

// DeriverConfig fills the Deriver's pool, coordinator and host map from the
// arguments, else from what the store knows (an agent that traced the pool
// through XAPI before): the logs never name the pool, and record ids need
// its uuid.
func DeriverConfig(ctx context.Context, st *lineage.Store, pool, master string, hosts map[string]string) (xensource.Config, error) {
	cfg := xensource.Config{PoolUUID: pool, Master: master, Hosts: map[string]string{}}
	for n, u := range hosts {
		cfg.Hosts[n] = u
	}
	pools, err := st.Pools(ctx)
	if err != nil {
		return cfg, err
	}
	if cfg.PoolUUID == "" {
		switch len(pools) {
		case 0:
			return cfg, ErrNoPool
		case 1:
			cfg.PoolUUID = pools[0].UUID
		default:
			return cfg, fmt.Errorf("the store knows %d pools: choose one with --pool", len(pools))
		}
	}
	if len(cfg.Hosts) == 0 {
		hs, err := st.Hosts(ctx)
		if err != nil {
			return cfg, err
		}
		for _, h := range hs {
			if h.PoolUUID == cfg.PoolUUID || h.PoolUUID == "" {
				cfg.Hosts[h.Name] = h.UUID
			}
		}
		if cfg.Master == "" {
			for _, p := range pools {
				for _, h := range hs {
					if p.UUID == cfg.PoolUUID && h.UUID == p.MasterUUID {
						cfg.Master = h.Name
					}
				}
			}
		}
	}
	return cfg, nil
}
