package config

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/vmlineage/vmlineage/internal/listenauth"
	"gopkg.in/yaml.v3"
)

// Problem is one finding of Check. Msg never holds a secret: values are
// only echoed for keys that cannot hold one, and the password read is
// scrubbed from every message.
type Problem struct {
	Key     string // dotted key path, e.g. xapi.event_timeout ("" for the whole file)
	Line    int    // 1-based line in the file, 0 when unknown
	Msg     string
	Warning bool // true: worth knowing, but the agent would start
}

func (p Problem) String() string {
	var b strings.Builder
	if p.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", p.Line)
	}
	if p.Warning {
		b.WriteString("warning: ")
	}
	if p.Key != "" {
		b.WriteString(p.Key + ": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// CheckOptions tune Check.
type CheckOptions struct {
	// Connect, when set, is called once the file is valid to try the
	// configured endpoints (XAPI login, outputs); each error becomes a
	// Problem on key (the key naming the endpoint). The password is passed
	// so that the caller need not resolve it again.
	Connect func(ctx context.Context, cfg Config, password string) []KeyError
	// Timeout bounds Connect (default 10s).
	Timeout time.Duration
	// LookupEnv replaces os.LookupEnv (tests).
	LookupEnv func(string) (string, bool)
}

// KeyError is an error attributed to a config key.
type KeyError struct {
	Key string
	Err error
}

// Check validates the config file at path more thoroughly than Load: every
// unknown key, wrong type and bad value is reported with its key and line
// (not just the first), and the files it names (password, CA) are read.
// Problems are sorted by line. The Config returned is what Load would give
// when there is no error-level Problem.
func Check(path string, opts CheckOptions) (Config, []Problem) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Default(), []Problem{{Msg: "cannot read config: " + errText(err)}}
	}
	return CheckBytes(b, opts)
}

// CheckBytes is Check on the file's contents.
func CheckBytes(b []byte, opts CheckOptions) (Config, []Problem) {
	cfg := Default()
	c := &checker{lines: map[string]int{}}
	if len(bytes.TrimSpace(b)) > 0 {
		var doc yaml.Node
		dec := yaml.NewDecoder(bytes.NewReader(b))
		if err := dec.Decode(&doc); err != nil {
			return cfg, []Problem{syntaxProblem(err)}
		}
		var extra yaml.Node
		if err := dec.Decode(&extra); err == nil {
			c.add("", extra.Line, "more than one YAML document; the agent reads only one")
		}
		if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
			c.walk(doc.Content[0], reflect.TypeOf(cfg), "")
		}
		if c.errors() == 0 {
			if err := Decode(b, &cfg); err != nil {
				// The walk should have caught it; report rather than lose it.
				c.problems = append(c.problems, syntaxProblem(err))
			}
		}
	}
	if c.errors() > 0 {
		return cfg, c.sorted()
	}
	if err := cfg.Validate(); err != nil {
		for _, e := range splitJoined(err) {
			key, msg, ok := strings.Cut(e.Error(), ": ")
			if !ok {
				key, msg = "", e.Error()
			}
			c.add(key, c.lines[key], msg)
		}
	}
	pw := c.secrets(&cfg, opts)
	if c.errors() == 0 && opts.Connect != nil {
		timeout := opts.Timeout
		if timeout <= 0 {
			timeout = 10 * time.Second
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		for _, ke := range opts.Connect(ctx, cfg, pw) {
			c.add(ke.Key, c.lines[ke.Key], errText(ke.Err))
		}
		cancel()
	}
	if pw != "" {
		// Belt and braces: whatever a library put in an error, the
		// password never leaves Check.
		for i := range c.problems {
			c.problems[i].Msg = strings.ReplaceAll(c.problems[i].Msg, pw, "[redacted]")
		}
	}
	return cfg, c.sorted()
}

type checker struct {
	problems []Problem
	lines    map[string]int // key path → line, for problems found after decoding
}

func (c *checker) add(key string, line int, msg string) {
	c.problems = append(c.problems, Problem{Key: key, Line: line, Msg: msg})
}

func (c *checker) warn(key string, msg string) {
	c.problems = append(c.problems, Problem{Key: key, Line: c.lines[key], Msg: msg, Warning: true})
}

func (c *checker) errors() int {
	n := 0
	for _, p := range c.problems {
		if !p.Warning {
			n++
		}
	}
	return n
}

func (c *checker) sorted() []Problem {
	sort.SliceStable(c.problems, func(i, j int) bool { return c.problems[i].Line < c.problems[j].Line })
	return c.problems
}

var durationType = reflect.TypeOf(Duration(0))

// walk checks node against type t (a struct of Config) at key path prefix.
func (c *checker) walk(n *yaml.Node, t reflect.Type, prefix string) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // "xapi:" with nothing under it: defaults
	}
	if n.Kind != yaml.MappingNode {
		c.add(prefix, n.Line, "want a mapping of keys, found "+kindName(n))
		return
	}
	fields := map[string]reflect.StructField{}
	var names []string
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		key, _, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
		if key == "" || key == "-" {
			continue
		}
		fields[key] = sf
		names = append(names, key)
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		path := k.Value
		if prefix != "" {
			path = prefix + "." + k.Value
		}
		if k.Kind != yaml.ScalarNode || !keyRE.MatchString(k.Value) {
			// Our keys are snake_case; anything else is not echoed, as it
			// may be a secret pasted on the wrong line.
			c.add(prefix, k.Line, "unknown key that is not a plain name (not shown); keys are lower_case_words")
			continue
		}
		if first, dup := seen[k.Value]; dup {
			c.add(path, k.Line, fmt.Sprintf("set twice (first on line %d)", first))
			continue
		}
		seen[k.Value] = k.Line
		c.lines[path] = k.Line
		sf, ok := fields[k.Value]
		if !ok {
			// The value is never echoed: an unknown key may be a
			// misplaced secret ("password: …").
			msg := "unknown key"
			if s := suggest(k.Value, names); s != "" {
				msg += fmt.Sprintf(" (did you mean %s?)", s)
			}
			c.add(path, k.Line, msg+"; known keys here: "+strings.Join(names, ", "))
			continue
		}
		if sf.Type.Kind() == reflect.Struct && sf.Type != durationType {
			c.walk(v, sf.Type, path)
			continue
		}
		c.leaf(v, sf.Type, path)
	}
}

// leaf decodes one value into a fresh value of type t; the message names the
// type wanted, not the value found.
func (c *checker) leaf(v *yaml.Node, t reflect.Type, path string) {
	if v.Kind == yaml.AliasNode {
		v = v.Alias
	}
	if v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
		return
	}
	want := typeName(t)
	if t.Kind() != reflect.Slice && t.Kind() != reflect.Map && v.Kind != yaml.ScalarNode {
		c.add(path, v.Line, "want "+want+", found "+kindName(v))
		return
	}
	ptr := reflect.New(t)
	if err := v.Decode(ptr.Interface()); err != nil {
		c.add(path, v.Line, "want "+want)
		return
	}
	if t.Kind() == reflect.String && v.Tag != "!!str" {
		// yaml turns `url: 8443` or `user: yes` into strings silently; a
		// number or bool where text is meant is usually a slip.
		c.problems = append(c.problems, Problem{Key: path, Line: v.Line, Msg: "value is not text (" + strings.TrimPrefix(v.Tag, "!!") + "); quote it if meant", Warning: true})
	}
}

func typeName(t reflect.Type) string {
	switch {
	case t == durationType:
		return "a duration such as 30s or 5m"
	case t.Kind() == reflect.Bool:
		return "true or false"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Int64:
		return "a whole number"
	case t.Kind() == reflect.String:
		return "text"
	case t.Kind() == reflect.Slice:
		return "a list"
	case t.Kind() == reflect.Map:
		return "a mapping"
	}
	return t.String()
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return "a single value"
	}
	return "something else"
}

// secrets reads the files and variables the config points at, without ever
// showing their contents, and returns the password (for Connect).
func (c *checker) secrets(cfg *Config, opts CheckOptions) string {
	lookup := opts.LookupEnv
	if lookup == nil {
		lookup = os.LookupEnv
	}
	x := &cfg.XAPI
	var pw string
	switch {
	case x.PasswordFile != "":
		fi, err := os.Stat(x.PasswordFile)
		if err != nil {
			c.add("xapi.password_file", c.lines["xapi.password_file"], "cannot read the password file: "+errText(err))
			break
		}
		if !fi.Mode().IsRegular() {
			c.add("xapi.password_file", c.lines["xapi.password_file"], x.PasswordFile+" is not a regular file")
			break
		}
		b, err := os.ReadFile(x.PasswordFile)
		if err != nil {
			c.add("xapi.password_file", c.lines["xapi.password_file"], "cannot read the password file: "+errText(err))
			break
		}
		line, _, _ := strings.Cut(string(b), "\n")
		pw = strings.TrimRight(line, "\r")
		if pw == "" {
			c.add("xapi.password_file", c.lines["xapi.password_file"], "the first line of "+x.PasswordFile+" is empty")
		}
		if fi.Mode().Perm()&0o004 != 0 {
			c.warn("xapi.password_file", x.PasswordFile+" is readable by every user; chmod 0640 (or 0600)")
		}
	case x.PasswordEnv != "":
		v, ok := lookup(x.PasswordEnv)
		if !ok || v == "" {
			// A warning: the service's environment (systemd
			// EnvironmentFile=) may well differ from the checker's.
			c.warn("xapi.password_env", "environment variable "+x.PasswordEnv+" is not set here and xapi.password_file is empty")
		}
		pw = v
	default:
		c.add("xapi.password_file", 0, "no password source: set xapi.password_file or xapi.password_env")
	}
	if x.CAFile != "" {
		b, err := os.ReadFile(x.CAFile)
		switch {
		case err != nil:
			c.add("xapi.ca_file", c.lines["xapi.ca_file"], "cannot read: "+errText(err))
		case !x509.NewCertPool().AppendCertsFromPEM(b):
			c.add("xapi.ca_file", c.lines["xapi.ca_file"], x.CAFile+" holds no PEM certificate")
		}
	}
	if x.Fingerprint != "" && !fingerprintRE.MatchString(x.Fingerprint) {
		c.add("xapi.fingerprint", c.lines["xapi.fingerprint"], "want a SHA-256 fingerprint: 64 hex digits, colons allowed")
	}
	if cfg.XAPI.URL == "" {
		c.warn("xapi.url", "not set: the agent needs it (here or --xapi-url)")
	}
	c.webToken(cfg, lookup)
	c.metricsToken(cfg)
	for i, o := range cfg.Outputs {
		// The agent reads these at start and stops when it cannot.
		for k, f := range map[string]string{"password_file": o.PasswordFile, "api_key_file": o.APIKeyFile} {
			if f == "" {
				continue
			}
			if _, err := os.ReadFile(f); err != nil {
				key := fmt.Sprintf("outputs[%d].%s", i, k)
				c.add(key, c.lines[key], "cannot read: "+errText(err))
			}
		}
	}
	return pw
}

// webToken checks what the agent checks before it opens the web view:
// listenauth's rule for the token (webui.token_file, else
// VMLINEAGE_TOKEN), and the file must be readable.
func (c *checker) webToken(cfg *Config, lookup func(string) (string, bool)) {
	w := cfg.WebUI
	if w.Listen == "" {
		return
	}
	token, _ := lookup("VMLINEAGE_TOKEN")
	if w.TokenFile != "" {
		b, err := os.ReadFile(w.TokenFile)
		if err != nil {
			c.add("webui.token_file", c.lines["webui.token_file"], "cannot read: "+errText(err))
			return
		}
		token = string(b)
	}
	if err := listenauth.Check(w.Listen, strings.TrimSpace(token)); err != nil {
		c.add("webui.listen", c.lines["webui.listen"], err.Error()+"; the agent would refuse to start")
	}
}

// metricsToken checks metrics.token_file as the agent reads it: readable,
// and as long as listenauth asks of any token.
func (c *checker) metricsToken(cfg *Config) {
	m := cfg.Metrics
	if m.Listen == "" || m.TokenFile == "" {
		return
	}
	b, err := os.ReadFile(m.TokenFile)
	if err != nil {
		c.add("metrics.token_file", c.lines["metrics.token_file"], "cannot read: "+errText(err))
		return
	}
	if n := len(strings.TrimSpace(string(b))); n < listenauth.MinTokenLen {
		c.add("metrics.token_file", c.lines["metrics.token_file"], fmt.Sprintf("the token is %d characters long; at least %d are required", n, listenauth.MinTokenLen))
	}
}

var keyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)

var fingerprintRE = regexp.MustCompile(`^(?i:[0-9a-f]{64}|[0-9a-f]{2}(:[0-9a-f]{2}){31})$`)

// errText renders err without the wrapping noise of os errors, keeping the
// path (which is not a secret) and the reason.
func errText(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Path + ": " + pe.Err.Error()
	}
	return err.Error()
}

var (
	lineRE   = regexp.MustCompile(`line (\d+)`)
	quotedRE = regexp.MustCompile("'[^']*'|`[^`]*`|\"[^\"]*\"")
)

// syntaxProblem turns a yaml error into a Problem with its line. yaml.v3
// quotes pieces of the input in its messages (values, anchor names: the
// fuzz test found a secret echoed as an unknown anchor), so every quoted
// piece is cut out.
func syntaxProblem(err error) Problem {
	msg := quotedRE.ReplaceAllString(strings.TrimPrefix(err.Error(), "yaml: "), "(…)")
	p := Problem{Msg: "not valid YAML: " + msg}
	if m := lineRE.FindStringSubmatch(msg); m != nil {
		p.Line, _ = strconv.Atoi(m[1])
		p.Msg = "not valid YAML: " + strings.TrimSpace(lineRE.ReplaceAllString(strings.TrimPrefix(msg, m[0]+":"), "line $1"))
	}
	if strings.Contains(msg, "cannot unmarshal") {
		p.Msg = "wrong type" // never echo a value
	}
	return p
}

func splitJoined(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// suggest returns the known key nearest to k when it is a likely typo.
func suggest(k string, names []string) string {
	best, bestD := "", 3
	for _, n := range names {
		if d := editDistance(strings.ToLower(k), n); d < bestD {
			best, bestD = n, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}
