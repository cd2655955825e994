package plugins

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"

	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
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
	if os.Getenv(Handshake.MagicCookieKey) == Handshake.MagicCookieValue {
		// The host execs a detector through /proc/self/fd/N (see launch),
		// which leaves the process named "N" where ps -e, top and pgrep
		// look (its comm); name it after its file, as an exec by path
		// would. Without /proc (not Linux) this does nothing.
		os.WriteFile("/proc/self/comm", []byte(filepath.Base(os.Args[0])), 0)
	}
	if dir := os.Getenv(EnvCPUProfile); dir != "" && os.Getenv(Handshake.MagicCookieKey) == Handshake.MagicCookieValue {
		if stop, err := startCPUProfile(dir); err != nil {
			fmt.Fprintf(os.Stderr, "cpu profile: %v\n", err)
		} else {
			defer stop()
		}
	}
	if os.Getenv("GOGC") == "" {
		// A detector's live heap is a few MiB, so at the default target the
		// collector ran every hundred or so calls and was a third of the
		// process's CPU; four times the target costs a few MiB.
		debug.SetGCPercent(400)
	}
	if os.Getenv("GOMAXPROCS") == "" {
		// A detector answers one call at a time nearly always. With a P
		// per core, each of several detector processes kept threads
		// spinning for work on cores the host and the other detectors
		// need. Enrich1MVMs, three alternating pairs: the detectors' CPU
		// fell 12–20% per alert, their syscalls 4.3 -> 3.6. GOMAXPROCS in
		// the environment (the host's, which detectors inherit) still rules.
		runtime.GOMAXPROCS(1)
	}
	goplugin.Serve(&goplugin.ServeConfig{
		HandshakeConfig: Handshake,
		Plugins:         goplugin.PluginSet{PluginName: &DetectorPlugin{Impl: d}},
		GRPCServer:      newGRPCServer,
	})
}

// newGRPCServer serves calls on a few long-lived goroutines instead of one
// new goroutine per call (whose stack then grows on every call).
func newGRPCServer(opts []grpc.ServerOption) *grpc.Server {
	return grpc.NewServer(append(opts, grpc.NumStreamWorkers(uint32(runtime.GOMAXPROCS(0))),
		grpc.InitialWindowSize(streamWindow), grpc.InitialConnWindowSize(streamWindow))...)
}

// streamWindow is the HTTP/2 flow-control window of every connection and
// stream between the host and its detectors. Setting it at all turns off
// gRPC's BDP estimation, which otherwise sends a PING (and makes the other
// side answer one) after nearly every call's data, since the calls come
// one at a time: two more writes and reads for each side per call, the
// largest part of a call's cost on a machine whose syscalls are slow. A
// window of 1 MiB is never the limit for messages this size.
const streamWindow = 1 << 20

// dialOptions go with every connection the host or a detector opens.
var dialOptions = []grpc.DialOption{grpc.WithInitialWindowSize(streamWindow), grpc.WithInitialConnWindowSize(streamWindow)}

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
