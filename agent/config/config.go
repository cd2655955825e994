// Package config is vmlineage's configuration: a YAML file whose every key is
// also a command-line flag (xapi.url ↔ --xapi-url), with secrets read only
// from files or environment variables, never from the command line.
package config

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is the whole agent configuration. The yaml tags are the public
// contract of the config file; flags are derived from them.
type Config struct {
	// DataDir holds the lineage store (lineage.db) and spools.
	DataDir string `yaml:"data_dir" help:"directory for the lineage store and spools"`
	// MemoryLimit is a soft limit on the Go heap (runtime/debug.SetMemoryLimit):
	// the garbage collector works harder as the heap nears it.
	MemoryLimit int64 `yaml:"memory_limit" help:"soft limit of the agent's heap in bytes (0: none)"`
	Log         Log   `yaml:"log"`
	XAPI        XAPI  `yaml:"xapi"`
	// Outputs are where records go (a list: only in the file, no flags).
	Outputs   []Output  `yaml:"outputs"`
	Metrics   Metrics   `yaml:"metrics"`
	WebUI     WebUI     `yaml:"webui"`
	Detectors Detectors `yaml:"detectors"`
	Alerts    Alerts    `yaml:"alerts"`
	Lineage   Lineage   `yaml:"lineage"`
	LogSource LogSource `yaml:"logsource"`
	Audit     Audit     `yaml:"audit"`
	Chain     Chain     `yaml:"chain"`
}

// Audit is the intake of XAPI's RBAC audit log, joined to the records to
// name who made each call (and to record refused calls).
type Audit struct {
	// Source: off (default), xapi (GET /audit_log on every host of the
	// pool; xapi re-reads the host's archives on every request, so poll
	// gently), files (audit.log files collected from the hosts) or syslog
	// (the hosts forward their logs: xe host-syslog-reconfigure).
	Source       string            `yaml:"source" help:"where the RBAC audit log comes from: off, xapi (GET /audit_log on every host), files, or syslog"`
	Poll         Duration          `yaml:"poll" help:"how often every host's /audit_log is read (source xapi)"`
	Glob         string            `yaml:"glob" help:"audit.log files, one per host (source files), e.g. /var/log/xen/*/audit.log"`
	HostPattern  string            `yaml:"host_pattern" help:"regexp on a file's path whose first group is its host name; 'line': the lines' syslog host (source files)"`
	SyslogListen string            `yaml:"syslog_listen" help:"host:port where the hosts forward their audit log, UDP and TCP (source syslog)"`
	HostAlias    map[string]string `yaml:"host_alias"` // syslog host name -> XAPI host name-label (file only)
	// HostURLs overrides, per host name-label, the base URL its
	// /audit_log is read from (source xapi; default: the master's scheme
	// and port at the host's management address), for hosts reached
	// through another address (file only).
	HostURLs map[string]string `yaml:"host_urls"`
}

// Enabled reports whether an audit source is configured.
func (a Audit) Enabled() bool { return a.Source != "" && a.Source != "off" }

// LogSource is the xensource.log fallback (paper section 3.2): the hosts'
// logs, tailed from files (collected over NFS, say) or received over syslog,
// give the records while the pool master cannot be reached.
type LogSource struct {
	Glob         string            `yaml:"glob" help:"xensource.log files to tail, one per host, e.g. /var/log/xen/*/xensource.log (empty: no files)"`
	HostPattern  string            `yaml:"host_pattern" help:"regexp on a file's path whose first group is its host name; 'line' takes each line's syslog host (default: the parent directory's name)"`
	SyslogListen string            `yaml:"syslog_listen" help:"host:port where the hosts forward their logs (host.syslog_destination), UDP and TCP (empty: off)"`
	HostAlias    map[string]string `yaml:"host_alias"` // syslog host name -> XAPI host name-label (file only)
	Timezone     string            `yaml:"timezone" help:"time zone of the hosts' syslog time stamps (dom0 local time; default UTC)"`
	Poll         Duration          `yaml:"poll" help:"how often the tailed files are read"`
	// FailoverAfter is how long XAPI must stay unreachable before records
	// derived from the logs are stored on their own.
	FailoverAfter Duration `yaml:"failover_after" help:"how long the pool master must be unreachable before the logs' records are stored"`
	// IdleTimeout closes an operation the logs give no end marker for
	// (clone, copy, reboot, create, provision) after this much log time
	// without a line of it: its record comes that late.
	IdleTimeout Duration `yaml:"idle_timeout" help:"log time after which an operation without an end marker in the logs (clone, copy, reboot, create, provision) is taken as finished: at least the longest such operation"`
	// Hold is how long a record the logs reveal while XAPI answers waits
	// for the tracer's own (richer) record before it is stored.
	Hold Duration `yaml:"hold" help:"how long a record the logs reveal while XAPI answers waits for the XAPI tracer's record (0: twice failover_after, at least 1m)"`
}

// Enabled reports whether a log source is configured.
func (l LogSource) Enabled() bool { return l.Glob != "" || l.SyslogListen != "" }

// Chain is the tamper-evident hash chain of stored records (issue 6).
type Chain struct {
	// Settle is how long a record may wait unsealed for what a second
	// source adds (the log source, the audit log's actor) before it is
	// sealed and shipped. Only used when such a source is configured.
	Settle          Duration `yaml:"settle" help:"longest a record waits unsealed for its actor or a second source before it is sealed and shipped (with a log source, one XAPI saw only in part also waits until the logs have settled past it)"`
	CheckpointEvery Duration `yaml:"checkpoint_every" help:"how often a checkpoint of the chain head goes to every output (0: only at start and shutdown)"`
}

// Lineage is where alert enrichment reads lineage from.
type Lineage struct {
	Backend string `yaml:"backend" help:"where alert enrichment reads lineage: store (this agent's store) or elasticsearch (the VM documents every agent's Elasticsearch output writes: every pool's VMs)"`
	Output  string `yaml:"output" help:"with lineage.backend elasticsearch: the elasticsearch output to read through (default: the only one)"`
}

// Lineage backends.
const (
	LineageStore         = "store"
	LineageElasticsearch = "elasticsearch"
)

// LineageOutput is the elasticsearch output lineage.backend elasticsearch
// reads through: lineage.output, or the only elasticsearch output.
func (c *Config) LineageOutput() (Output, error) {
	var found []Output
	for _, o := range c.Outputs {
		if o.Type == "elasticsearch" && (c.Lineage.Output == "" || o.Name == c.Lineage.Output) {
			found = append(found, o)
		}
	}
	switch {
	case len(found) == 1:
		return found[0], nil
	case c.Lineage.Output != "":
		return Output{}, fmt.Errorf("lineage.output: no elasticsearch output is named %q", c.Lineage.Output)
	case len(found) == 0:
		return Output{}, errors.New("lineage.backend: elasticsearch needs an output of type elasticsearch")
	}
	return Output{}, fmt.Errorf("lineage.output: %d elasticsearch outputs; name the one to read through", len(found))
}

// Detectors are the detector plugins the agent runs (separate processes,
// go-plugin, SHA-256 pinned).
type Detectors struct {
	Dir         string            `yaml:"dir" help:"directory of detector plugin binaries (empty: no detectors)"`
	Pins        map[string]string `yaml:"pins"` // name → SHA-256 of the binary (file only)
	PinsFile    string            `yaml:"pins_file" help:"sha256sum-style file of detector pins (default: <dir>/SHA256SUMS when present)"`
	CallTimeout Duration          `yaml:"call_timeout" help:"bound of every call to a detector"`
}

// Alerts is the intake of the security alerts the detectors enrich.
type Alerts struct {
	SyslogListen string `yaml:"syslog_listen" help:"host:port for CEF alerts over syslog, UDP and TCP (empty: off)"`
	HTTPListen   string `yaml:"http_listen" help:"host:port for POST /v1/alerts with ECS JSON alerts (empty: off)"`
	TokenFile    string `yaml:"token_file" help:"file holding the bearer token POST /v1/alerts requires"`
	// The alert log (alerts.db beside the store) keeps the alerts received
	// in the last Retention, at most MaxAlerts of them; 0 sets no bound.
	Retention Duration `yaml:"retention" help:"how long the alert log keeps an alert after receiving it (e.g. 90d; 0: forever)"`
	MaxAlerts int64    `yaml:"max_alerts" help:"most alerts the alert log keeps, the oldest go first (0: no bound)"`
	// Timezone is the sensors' zone, for alert times written without one
	// (RFC 3164 headers, CEF dates without a zone): an IANA name such as
	// Europe/Berlin, or Local. Empty: UTC.
	Timezone string `yaml:"timezone" help:"zone of alert times that carry none (RFC 3164 headers, CEF dates): IANA name, e.g. Europe/Berlin, or Local (default UTC)"`
}

// Zone is the location Timezone names (UTC when empty); Validate has
// checked it.
func (a Alerts) Zone() (*time.Location, error) {
	if a.Timezone == "" {
		return time.UTC, nil
	}
	z, err := time.LoadLocation(a.Timezone)
	if err != nil {
		return nil, fmt.Errorf("alerts.timezone: %q is not a time zone (want an IANA name such as Europe/Berlin, or UTC or Local)", a.Timezone)
	}
	return z, nil
}

// Output is one destination of lifecycle records. Each has its own durable
// spool under data_dir/spool/<name>.
type Output struct {
	Name      string `yaml:"name"`      // unique; names the spool and the metrics
	Type      string `yaml:"type"`      // syslog, elasticsearch, file, stdout
	Format    string `yaml:"format"`    // cef or ecs (syslog, file, stdout), json (file, stdout); elasticsearch is always ecs
	Namespace string `yaml:"namespace"` // ECS data_stream.namespace (default "default")

	// syslog
	Address     string `yaml:"address"`     // host:port
	Network     string `yaml:"network"`     // udp, tcp (octet-counting, default) or tls
	Framing     string `yaml:"framing"`     // rfc5424 (default) or rfc3164 (with a tag: ArcSight legacy)
	Tag         string `yaml:"tag"`         // RFC 3164 tag / RFC 5424 APP-NAME (default vmlineage)
	CAFile      string `yaml:"ca_file"`     // TLS: verify the receiver (syslog, elasticsearch)
	Fingerprint string `yaml:"fingerprint"` // TLS: pinned SHA-256 of the receiver's certificate
	CertFile    string `yaml:"cert_file"`   // TLS client certificate (syslog)
	KeyFile     string `yaml:"key_file"`    // TLS client key (syslog)

	// elasticsearch
	URLs         []string `yaml:"urls"`
	Username     string   `yaml:"username"`
	PasswordFile string   `yaml:"password_file"`
	APIKeyFile   string   `yaml:"api_key_file"` // base64 "id:key" as Elasticsearch issues it
	KibanaURL    string   `yaml:"kibana_url"`   // for vmlineage setup
	AllowHTTP    bool     `yaml:"allow_http"`   // credentials over plain http:// URLs (unencrypted; lab use only)

	// file
	Path     string `yaml:"path"`
	MaxBytes int64  `yaml:"max_bytes"` // rotate at this size (default 100 MiB)
	Keep     int    `yaml:"keep"`      // rotated files kept (default 5)

	// spool
	SpoolMaxBytes int64  `yaml:"spool_max_bytes"` // default 1 GiB
	WhenFull      string `yaml:"when_full"`       // block (default: no loss, back-pressure), reject, drop-oldest
}

// Metrics is the Prometheus endpoint (/metrics, /healthz).
type Metrics struct {
	Listen    string `yaml:"listen" help:"address of the Prometheus /metrics and /healthz endpoint (empty: off)"`
	TokenFile string `yaml:"token_file" help:"file holding a bearer token /metrics then requires (/healthz stays open)"`
}

// WebUI is the forensics view inside the agent.
type WebUI struct {
	Listen    string `yaml:"listen" help:"address of the forensics web view (empty: off; a non-loopback address needs a token)"`
	TokenFile string `yaml:"token_file" help:"file holding the bearer token of the web view"`
}

// Log configures the agent's own logs (log/slog).
type Log struct {
	Level  string `yaml:"level" help:"debug, info, warn or error"`
	Format string `yaml:"format" help:"text or json"`
}

// XAPI is how to reach the pool master.
type XAPI struct {
	URL string `yaml:"url" help:"pool master URL, e.g. https://xen1.example.org (a member is followed to the master)"`
	// User to log in as; the password comes from PasswordFile or the
	// environment variable named by PasswordEnv.
	User             string   `yaml:"user" help:"XAPI user name"`
	PasswordFile     string   `yaml:"password_file" help:"file holding the XAPI password (first line)"`
	PasswordEnv      string   `yaml:"password_env" help:"environment variable holding the XAPI password"`
	CAFile           string   `yaml:"ca_file" help:"PEM CA bundle to verify the pool's certificate"`
	Fingerprint      string   `yaml:"fingerprint" help:"pinned SHA-256 fingerprint of the pool master's certificate"`
	AllowHTTP        bool     `yaml:"allow_http" help:"allow plain http:// URLs (unencrypted; lab use only)"`
	Transport        string   `yaml:"transport" help:"xmlrpc, jsonrpc or auto"`
	Originator       string   `yaml:"originator" help:"session originator shown in XAPI's logs"`
	EventTimeout     Duration `yaml:"event_timeout" help:"event.from timeout"`
	CallTimeout      Duration `yaml:"call_timeout" help:"timeout of every other XAPI call"`
	MaxResponseBytes int64    `yaml:"max_response_bytes" help:"largest XAPI response accepted, in bytes"`
	BackoffMax       Duration `yaml:"backoff_max" help:"longest wait between reconnection attempts"`
}

// Default returns the configuration used when a key is not set.
func Default() Config {
	return Config{
		DataDir:     "/var/lib/vmlineage",
		MemoryLimit: 100 << 20,
		Log:         Log{Level: "info", Format: "text"},
		XAPI: XAPI{User: "root", PasswordEnv: "VMLINEAGE_XAPI_PASSWORD", Transport: "xmlrpc", Originator: "vmlineage",
			EventTimeout: Duration(30 * time.Second), CallTimeout: Duration(60 * time.Second),
			MaxResponseBytes: 64 << 20, BackoffMax: Duration(60 * time.Second)},
		Detectors: Detectors{CallTimeout: Duration(2 * time.Second)},
		Alerts:    Alerts{Retention: Duration(90 * 24 * time.Hour), MaxAlerts: 2_000_000},
		Lineage:   Lineage{Backend: LineageStore},
		LogSource: LogSource{Poll: Duration(time.Second), FailoverAfter: Duration(30 * time.Second), IdleTimeout: Duration(10 * time.Minute)},
		Audit:     Audit{Source: "off", Poll: Duration(time.Minute)},
		Chain:     Chain{Settle: Duration(30 * time.Second), CheckpointEvery: Duration(5 * time.Minute)},
	}
}

// Duration is a time.Duration written as "30s" in YAML.
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// UnmarshalYAML parses "30s", "5m", "90d" (days of 24 h), or a number of
// seconds.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := parseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as text.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

func parseDuration(s string) (time.Duration, error) {
	if v, err := time.ParseDuration(s); err == nil {
		return v, nil
	}
	// Days, which time.ParseDuration lacks: retention is said in days.
	if d, ok := strings.CutSuffix(s, "d"); ok {
		if n, err := strconv.ParseFloat(d, 64); err == nil && n >= 0 && n < 100*365 && !strings.ContainsAny(d, " \t") {
			return time.Duration(n * float64(24*time.Hour)), nil
		}
	}
	// A bare number is seconds. ParseFloat takes the whole text: Sscanf
	// read "90x" as 90 s (and, before days were parsed, "90d" too).
	if secs, err := strconv.ParseFloat(s, 64); err == nil {
		return time.Duration(secs * float64(time.Second)), nil
	}
	return 0, fmt.Errorf("invalid duration %q (want e.g. 30s, 5m, 90d)", s)
}

// Load reads a YAML file over the defaults. Unknown keys and wrong types are
// errors that name the key and the line.
func Load(path string) (Config, error) {
	cfg := Default()
	b, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	if err := Decode(b, &cfg); err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// Decode reads YAML into cfg, refusing unknown keys.
func Decode(b []byte, cfg *Config) error {
	if len(bytes.TrimSpace(b)) == 0 {
		return nil
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil {
		return fmt.Errorf("%s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	// A second document (after ---) would be ignored, whatever it sets.
	var more yaml.Node
	if err := dec.Decode(&more); err == nil {
		return errors.New("more than one YAML document (a --- line): put every setting in one")
	} else if !errors.Is(err, io.EOF) {
		return fmt.Errorf("%s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	return nil
}

// Password resolves the XAPI password from the file or the environment.
func (x *XAPI) Password() (string, error) {
	if x.PasswordFile != "" {
		b, err := os.ReadFile(x.PasswordFile)
		if err != nil {
			return "", fmt.Errorf("xapi.password_file: %w", err)
		}
		line, _, _ := strings.Cut(string(b), "\n")
		return strings.TrimRight(line, "\r"), nil
	}
	if x.PasswordEnv != "" {
		if v, ok := os.LookupEnv(x.PasswordEnv); ok {
			return v, nil
		}
	}
	return "", errors.New("no XAPI password: set xapi.password_file or the environment variable named by xapi.password_env (" + x.PasswordEnv + ")")
}

// StorePath is the lineage store's file.
func (c *Config) StorePath() string { return filepath.Join(c.DataDir, "lineage.db") }

// Validate checks values a YAML decoder cannot.
func (c *Config) Validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("data_dir: must not be empty"))
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log.level: %q is not debug, info, warn or error", c.Log.Level))
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		errs = append(errs, fmt.Errorf("log.format: %q is not text or json", c.Log.Format))
	}
	switch c.XAPI.Transport {
	case "xmlrpc", "jsonrpc", "auto":
	default:
		errs = append(errs, fmt.Errorf("xapi.transport: %q is not xmlrpc, jsonrpc or auto", c.XAPI.Transport))
	}
	if c.XAPI.URL != "" && !strings.HasPrefix(c.XAPI.URL, "https://") && !strings.HasPrefix(c.XAPI.URL, "http://") {
		errs = append(errs, fmt.Errorf("xapi.url: %q must start with https:// (or http:// with xapi.allow_http)", c.XAPI.URL))
	}
	if strings.HasPrefix(c.XAPI.URL, "http://") && !c.XAPI.AllowHTTP {
		errs = append(errs, fmt.Errorf("xapi.url: %q is plain HTTP; set xapi.allow_http: true to allow it", c.XAPI.URL))
	}
	if (c.Alerts.SyslogListen != "" || c.Alerts.HTTPListen != "") && c.Detectors.Dir == "" {
		errs = append(errs, errors.New("alerts: taking alerts in needs detectors.dir (the detectors enrich them)"))
	}
	if c.Alerts.HTTPListen != "" && c.Alerts.TokenFile == "" {
		errs = append(errs, errors.New("alerts.token_file: POST /v1/alerts needs a bearer token"))
	}
	// An hour at least: the detectors count alerts over windows (24 h by
	// default), and alerts deleted stop counting.
	if r := c.Alerts.Retention.D(); r < 0 || (r > 0 && r < time.Hour) {
		errs = append(errs, fmt.Errorf("alerts.retention: %s is not 0 (keep forever) or at least 1h", r))
	}
	if _, err := c.Alerts.Zone(); err != nil {
		errs = append(errs, err)
	}
	if c.Alerts.MaxAlerts < 0 {
		errs = append(errs, fmt.Errorf("alerts.max_alerts: %d is below 0 (0: no bound)", c.Alerts.MaxAlerts))
	}
	switch c.Lineage.Backend {
	case LineageStore:
		if c.Lineage.Output != "" {
			errs = append(errs, errors.New("lineage.output: only read with lineage.backend: elasticsearch"))
		}
	case LineageElasticsearch:
		if _, err := c.LineageOutput(); err != nil {
			errs = append(errs, err)
		}
	default:
		errs = append(errs, fmt.Errorf("lineage.backend: %q is not store or elasticsearch", c.Lineage.Backend))
	}
	if c.LogSource.Timezone != "" {
		if _, err := time.LoadLocation(c.LogSource.Timezone); err != nil {
			errs = append(errs, fmt.Errorf("logsource.timezone: %w", err))
		}
	}
	if c.LogSource.HostPattern != "" && c.LogSource.HostPattern != "line" {
		if _, err := regexp.Compile(c.LogSource.HostPattern); err != nil {
			errs = append(errs, fmt.Errorf("logsource.host_pattern: %w", err))
		}
	}
	if c.LogSource.Enabled() && c.LogSource.FailoverAfter <= 0 {
		errs = append(errs, errors.New("logsource.failover_after: must be positive"))
	}
	if c.LogSource.IdleTimeout < 0 || c.LogSource.Hold < 0 {
		errs = append(errs, errors.New("logsource: idle_timeout and hold may not be negative"))
	}
	switch c.Audit.Source {
	case "", "off", "xapi":
	case "files":
		if c.Audit.Glob == "" {
			errs = append(errs, errors.New("audit.glob: source files needs the audit.log files"))
		}
	case "syslog":
		if c.Audit.SyslogListen == "" {
			errs = append(errs, errors.New("audit.syslog_listen: source syslog needs host:port"))
		}
	default:
		errs = append(errs, fmt.Errorf("audit.source: %q is not off, xapi, files or syslog", c.Audit.Source))
	}
	if c.Audit.Source == "xapi" && c.Audit.Poll <= 0 {
		errs = append(errs, errors.New("audit.poll: must be positive"))
	}
	if c.Chain.Settle < 0 || c.Chain.CheckpointEvery < 0 {
		errs = append(errs, errors.New("chain: settle and checkpoint_every may not be negative"))
	}
	names := map[string]bool{}
	for i, o := range c.Outputs {
		key := fmt.Sprintf("outputs[%d]", i)
		switch {
		case o.Name == "":
			errs = append(errs, fmt.Errorf("%s.name: must be set", key))
		case names[o.Name]:
			errs = append(errs, fmt.Errorf("%s.name: %q is used twice", key, o.Name))
		case strings.ContainsAny(o.Name, "/\\ ."):
			errs = append(errs, fmt.Errorf("%s.name: %q may not contain / \\ . or spaces", key, o.Name))
		}
		names[o.Name] = true
		switch o.Type {
		case "syslog":
			if o.Address == "" {
				errs = append(errs, fmt.Errorf("%s.address: syslog needs host:port", key))
			}
			// TLS settings on a tcp or udp output would be ignored: the
			// records would go out in clear with no pin checked.
			if o.Network != "tls" && (o.CAFile != "" || o.Fingerprint != "" || o.CertFile != "" || o.KeyFile != "") {
				errs = append(errs, fmt.Errorf("%s.network: ca_file, fingerprint, cert_file and key_file apply to network: tls only (here %q); set network: tls", key, cmp.Or(o.Network, "tcp")))
			}
		case "elasticsearch":
			if len(o.URLs) == 0 {
				errs = append(errs, fmt.Errorf("%s.urls: elasticsearch needs at least one URL", key))
			}
			for _, u := range o.URLs {
				if !strings.HasPrefix(strings.ToLower(u), "http://") {
					continue
				}
				// A plain http:// URL would never use the pin or CA, and
				// would send the credentials in clear.
				if o.CAFile != "" || o.Fingerprint != "" {
					errs = append(errs, fmt.Errorf("%s.urls: %q is plain http, where ca_file and fingerprint do nothing; use https://", key, u))
				} else if (o.Username != "" || o.PasswordFile != "" || o.APIKeyFile != "") && !o.AllowHTTP {
					errs = append(errs, fmt.Errorf("%s.urls: %q is plain http: the credentials would go out in clear; use https:// (or allow_http: true, lab use only)", key, u))
				}
			}
		case "file":
			if o.Path == "" {
				errs = append(errs, fmt.Errorf("%s.path: file needs a path", key))
			}
		case "stdout":
		default:
			errs = append(errs, fmt.Errorf("%s.type: %q is not syslog, elasticsearch, file or stdout", key, o.Type))
		}
		switch o.Format {
		case "", "cef", "ecs":
		case "json":
			if o.Type != "file" && o.Type != "stdout" {
				errs = append(errs, fmt.Errorf("%s.format: json is for file and stdout outputs (records as `vmlineage records --format json` writes them, for `vmlineage verify --file`)", key))
			}
		default:
			errs = append(errs, fmt.Errorf("%s.format: %q is not cef, ecs or json", key, o.Format))
		}
		switch o.WhenFull {
		case "", "block", "reject", "drop-oldest":
		default:
			errs = append(errs, fmt.Errorf("%s.when_full: %q is not block, reject or drop-oldest", key, o.WhenFull))
		}
	}
	return errors.Join(errs...)
}
