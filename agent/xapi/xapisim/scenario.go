package xapisim

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Scenario is a pool and a timed list of operations on it. The JSON form is
// a public contract, described by scenarios/scenario.schema.json.
type Scenario struct {
	Name        string     `json:"name"`
	Description string     `json:"description,omitempty"`
	Start       time.Time  `json:"start"`
	Seed        int64      `json:"seed,omitempty"`
	Pool        PoolSpec   `json:"pool"`
	Hosts       []HostSpec `json:"hosts"`
	VMs         []VMSpec   `json:"vms"`
	Steps       []Step     `json:"steps"`
	// Users call XAPI, each in its own session (the first is the default
	// for steps that name none); none: root, locally.
	Users []UserSpec `json:"users,omitempty"`
}

// PoolSpec names the pool.
type PoolSpec struct {
	UUID string `json:"uuid,omitempty"`
	Name string `json:"name,omitempty"`
}

// HostSpec is one host; exactly one is the master (the first if none says so).
type HostSpec struct {
	Name    string `json:"name"`
	UUID    string `json:"uuid,omitempty"`
	Address string `json:"address,omitempty"`
	Master  bool   `json:"master,omitempty"`
}

// VMSpec is a VM present when the scenario starts.
type VMSpec struct {
	Name       string `json:"name"`
	UUID       string `json:"uuid,omitempty"`
	Host       string `json:"host,omitempty"`        // resident host when Running/Paused
	PowerState string `json:"power_state,omitempty"` // Halted (default), Running, Paused, Suspended
	IP         string `json:"ip,omitempty"`
	MAC        string `json:"mac,omitempty"`
	Template   bool   `json:"template,omitempty"`
	Parent     string `json:"parent,omitempty"` // lineage parent (name or uuid) known before the scenario
}

// Step is one timed operation or fault.
type Step struct {
	At           Duration `json:"at,omitempty"`
	Op           string   `json:"op,omitempty"`
	Fault        string   `json:"fault,omitempty"`
	VM           string   `json:"vm,omitempty"`
	Host         string   `json:"host,omitempty"`
	NewName      string   `json:"new_name,omitempty"`
	NewUUID      string   `json:"new_uuid,omitempty"`
	NewNames     []string `json:"new_names,omitempty"`
	NewUUIDs     []string `json:"new_uuids,omitempty"`
	IP           string   `json:"ip,omitempty"`
	MAC          string   `json:"mac,omitempty"`
	Async        bool     `json:"async,omitempty"`
	Duration     Duration `json:"duration,omitempty"`
	Fail         string   `json:"fail,omitempty"`
	FailParams   []string `json:"fail_params,omitempty"`
	Cancel       bool     `json:"cancel,omitempty"`
	KeepTask     bool     `json:"keep_task,omitempty"`
	DestroyAfter Duration `json:"destroy_after,omitempty"`
	Master       string   `json:"master,omitempty"` // host_is_slave: address to redirect to
	User         string   `json:"user,omitempty"`   // who calls (a users[] name)
	Denied       bool     `json:"denied,omitempty"` // RBAC refuses the call
	hasAt        bool
}

// UnmarshalJSON remembers whether "at" was given (absent: one second after
// the previous step's end).
func (s *Step) UnmarshalJSON(b []byte) error {
	type plain Step
	var p plain
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&p); err != nil {
		return err
	}
	*s = Step(p)
	var probe map[string]json.RawMessage
	_ = json.Unmarshal(b, &probe)
	_, s.hasAt = probe["at"]
	return nil
}

// Duration reads "10s", "1m30s" or a number of seconds.
type Duration time.Duration

// UnmarshalJSON accepts a Go duration string or seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("bad duration %q", s)
		}
		*d = Duration(v)
		return nil
	}
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		return fmt.Errorf("bad duration %s", b)
	}
	*d = Duration(f * float64(time.Second))
	return nil
}

// MarshalJSON writes the Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// Faults a step may inject.
var faultNames = []string{"session_expire", "events_lost", "drop_connection", "host_is_slave", "pause"}

// LoadScenario reads and validates a scenario.
func LoadScenario(r io.Reader) (*Scenario, error) {
	d := json.NewDecoder(r)
	d.DisallowUnknownFields()
	var sc Scenario
	if err := d.Decode(&sc); err != nil {
		return nil, fmt.Errorf("scenario: %w", err)
	}
	if err := sc.Validate(); err != nil {
		return nil, err
	}
	return &sc, nil
}

//go:embed scenarios/*.json
var builtinFS embed.FS

// BuiltinNames lists the shipped scenarios.
func BuiltinNames() []string {
	ents, _ := builtinFS.ReadDir("scenarios")
	var names []string
	for _, e := range ents {
		if n, ok := strings.CutSuffix(e.Name(), ".json"); ok && !strings.HasSuffix(n, ".schema") {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}

// Builtin loads a shipped scenario by name.
func Builtin(name string) (*Scenario, error) {
	b, err := builtinFS.ReadFile("scenarios/" + name + ".json")
	if err != nil {
		return nil, fmt.Errorf("no built-in scenario %q (have %s)", name, strings.Join(BuiltinNames(), ", "))
	}
	return LoadScenario(bytes.NewReader(b))
}

// Schema returns the JSON Schema of the scenario format.
func Schema() []byte {
	b, _ := builtinFS.ReadFile("scenarios/scenario.schema.json")
	return b
}

var powerStates = []string{"Halted", "Running", "Paused", "Suspended"}

// Validate checks the scenario and fills defaults (master, power states,
// step times). It names the first thing wrong.
func (sc *Scenario) Validate() error {
	if sc.Name == "" {
		return errors.New("scenario: missing name")
	}
	if sc.Start.IsZero() {
		sc.Start = time.Date(2024, 3, 1, 9, 0, 0, 0, time.UTC)
	}
	if len(sc.Hosts) == 0 {
		return fmt.Errorf("scenario %s: no hosts", sc.Name)
	}
	hosts := map[string]bool{}
	masters := 0
	for i, h := range sc.Hosts {
		if h.Name == "" {
			return fmt.Errorf("scenario %s: host %d has no name", sc.Name, i)
		}
		if hosts[h.Name] {
			return fmt.Errorf("scenario %s: host %q twice", sc.Name, h.Name)
		}
		hosts[h.Name] = true
		if h.UUID != "" {
			hosts[h.UUID] = true
		}
		if h.Master {
			masters++
		}
	}
	if masters > 1 {
		return fmt.Errorf("scenario %s: %d masters", sc.Name, masters)
	}
	if masters == 0 {
		sc.Hosts[0].Master = true
	}
	vms := map[string]bool{}
	for i := range sc.VMs {
		v := &sc.VMs[i]
		if v.Name == "" {
			return fmt.Errorf("scenario %s: vm %d has no name", sc.Name, i)
		}
		if vms[v.Name] {
			return fmt.Errorf("scenario %s: vm %q twice", sc.Name, v.Name)
		}
		vms[v.Name] = true
		if v.PowerState == "" {
			v.PowerState = "Halted"
		}
		if !contains(powerStates, v.PowerState) {
			return fmt.Errorf("scenario %s: vm %q: bad power_state %q", sc.Name, v.Name, v.PowerState)
		}
		if v.Template && v.PowerState != "Halted" {
			return fmt.Errorf("scenario %s: template %q must be Halted", sc.Name, v.Name)
		}
		if (v.PowerState == "Running" || v.PowerState == "Paused") && v.Host == "" {
			return fmt.Errorf("scenario %s: vm %q is %s but has no host", sc.Name, v.Name, v.PowerState)
		}
		if v.Host != "" && !hosts[v.Host] {
			return fmt.Errorf("scenario %s: vm %q: unknown host %q", sc.Name, v.Name, v.Host)
		}
	}
	var last time.Duration
	for i := range sc.Steps {
		s := &sc.Steps[i]
		where := fmt.Sprintf("scenario %s: step %d", sc.Name, i)
		switch {
		case s.Op == "" && s.Fault == "":
			return fmt.Errorf("%s: needs op or fault", where)
		case s.Op != "" && s.Fault != "":
			return fmt.Errorf("%s: has both op and fault", where)
		case s.Fault != "" && !contains(faultNames, s.Fault):
			return fmt.Errorf("%s: unknown fault %q (want one of %s)", where, s.Fault, strings.Join(faultNames, ", "))
		case s.Op != "" && s.Op != "create" && s.Op != "import" && s.VM == "":
			return fmt.Errorf("%s: op %s needs vm", where, s.Op)
		case (s.Op == "start_on" || s.Op == "resume_on") && s.Host == "":
			return fmt.Errorf("%s: op %s needs host", where, s.Op)
		case s.Host != "" && !hosts[s.Host]:
			return fmt.Errorf("%s: unknown host %q", where, s.Host)
		case s.Duration < 0 || s.At < 0:
			return fmt.Errorf("%s: negative time", where)
		}
		if !s.hasAt && s.At == 0 && i > 0 {
			s.At = Duration(last + time.Second)
		}
		s.hasAt = true
		end := time.Duration(s.At) + time.Duration(s.Duration)
		if s.Op != "" && s.Duration == 0 {
			end += defaultDuration(canonicalOp(s.Op))
		}
		if end > last {
			last = end
		}
	}
	return sc.validateUsers()
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
