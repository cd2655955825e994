package plugins

import (
	goplugin "github.com/hashicorp/go-plugin"
)

// Serve runs d as a detector plugin; call it from the detector's main. It
// returns only when the host ends the process. Started by hand (without the
// host's handshake cookie) it prints a short explanation and exits 1.
func Serve(d Detector) {
	goplugin.Serve(&goplugin.ServeConfig{
		HandshakeConfig: Handshake,
		Plugins:         goplugin.PluginSet{PluginName: &DetectorPlugin{Impl: d}},
		GRPCServer:      goplugin.DefaultGRPCServer,
	})
}
