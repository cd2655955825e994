package plugins

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"

	goplugin "github.com/hashicorp/go-plugin"
)

// EnvCPUProfile names a directory: when set in the host's environment (the
// detectors inherit it), each detector writes a CPU profile of its whole
// life to <dir>/<binary>-<pid>.pprof, closed when the host stops it. The
// benchmarks use it to see what a detector costs per alert.
const EnvCPUProfile = "VMLINEAGE_DETECTOR_CPUPROFILE"

// Serve runs d as a detector plugin; call it from the detector's main. It
// returns only when the host ends the process. Started by hand (without the
// host's handshake cookie) it prints a short explanation and exits 1.
func Serve(d Detector) {
	if dir := os.Getenv(EnvCPUProfile); dir != "" && os.Getenv(Handshake.MagicCookieKey) == Handshake.MagicCookieValue {
		if stop, err := startCPUProfile(dir); err != nil {
			fmt.Fprintf(os.Stderr, "cpu profile: %v\n", err)
		} else {
			defer stop()
		}
	}
	goplugin.Serve(&goplugin.ServeConfig{
		HandshakeConfig: Handshake,
		Plugins:         goplugin.PluginSet{PluginName: &DetectorPlugin{Impl: d}},
		GRPCServer:      goplugin.DefaultGRPCServer,
	})
}

func startCPUProfile(dir string) (func(), error) {
	f, err := os.Create(filepath.Join(dir, fmt.Sprintf("%s-%d.pprof", filepath.Base(os.Args[0]), os.Getpid())))
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}
