package server

import (
	"fmt"
)

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
