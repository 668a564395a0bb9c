package server

import (
	"flag"
	"fmt"
)

// registerFleetFlags registers the flags of the change hub and watcher.
func (o *Options) registerFleetFlags(fs *flag.FlagSet) {
	o.Watch.Interval = o.envDuration("DELTASYNC_WATCH_INTERVAL", o.Watch.Interval)
	fs.DurationVar(&o.Watch.Interval, "watch-interval", o.Watch.Interval,
		"how often a replica lists the change feed for versions committed elsewhere: the delay of a cross-replica wake-up, one store listing each (env DELTASYNC_WATCH_INTERVAL)")
	o.Watch.Window = o.envDuration("DELTASYNC_WATCH_WINDOW", o.Watch.Window)
	fs.DurationVar(&o.Watch.Window, "watch-window", o.Watch.Window,
		"how far behind its last listing the watcher lists again: more than replicas' clocks differ plus a change-set write (env DELTASYNC_WATCH_WINDOW)")
	o.HubIdleGrace = o.envDuration("DELTASYNC_HUB_IDLE_GRACE", o.HubIdleGrace)
	fs.DurationVar(&o.HubIdleGrace, "hub-idle-grace", o.HubIdleGrace,
		"how long a replica keeps a user's head after their last long poll, so the next poll costs the store nothing (env DELTASYNC_HUB_IDLE_GRACE)")
}

// validateFleet checks the options of the hub and the watcher.
func (o *Options) validateFleet() error {
	if o.Watch.SweepWindow < o.Watch.Window {
		o.Watch.SweepWindow = o.Watch.Window // a wide window set by flag widens the sweep too
	}
	if err := o.Watch.validate(); err != nil {
		return err
	}
	if o.HubIdleGrace <= 0 {
		return fmt.Errorf("server: hub-idle-grace must be positive, not %v", o.HubIdleGrace)
	}
	return nil
}
