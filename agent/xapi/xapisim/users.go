package xapisim

import (
	"crypto/md5"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/vmlineage/vmlineage/agent/record"
)

// UserSpec is one person or program that calls XAPI in a scenario: each
// logs in its own session, so the RBAC audit log and the ground truth name
// it as the actor of its steps.
type UserSpec struct {
	// Name is the session's subject name as audit.log prints it: "root",
	// an AD SAM name "EXAMPLE01\\vmadmin", "__dom0__vmss".
	Name string `json:"name"`
	// SubjectID is "LOCAL_SUPERUSER" (the default) or an AD SID.
	SubjectID string `json:"subject_id,omitempty"`
	// Uname is what the user typed at login (xensource.log's uname=, the
	// session.create audit line's uname); default: Name without its domain.
	Uname string `json:"uname,omitempty"`
	// Role is the user's RBAC role (pool-admin, pool-operator,
	// vm-power-admin, vm-admin, vm-operator, read-only); default
	// pool-admin. LOCAL_SUPERUSER is never checked.
	Role string `json:"role,omitempty"`
	// ClientIP is the caller's address, printed in the audit line's thread
	// field; "" for a local caller (dom0, unix socket).
	ClientIP string `json:"client_ip,omitempty"`
	// Originator is the session originator (XenCenter, cli, …).
	Originator string `json:"originator,omitempty"`
	// Password lets a client log in over the API as this user.
	Password string `json:"password,omitempty"`
}

// Roles, most privileged first (datamodel_roles.ml "ordered"; client-cert
// is left out: no scenario user holds it).
var roleOrder = []string{"pool-admin", "pool-operator", "vm-power-admin", "vm-admin", "vm-operator", "read-only"}

// minRole is the least role allowed each permission (datamodel_vm.ml
// allowed_roles, datamodel.ml http_actions); VM's default is vm-admin.
func minRole(permission string) string {
	switch permission {
	case "VM.start", "VM.resume", "VM.clean_shutdown", "VM.hard_shutdown", "VM.shutdown", "VM.clean_reboot",
		"VM.hard_reboot", "VM.suspend", "VM.pause", "VM.unpause":
		return "vm-operator"
	case "VM.snapshot", "VM.snapshot_with_quiesce", "VM.checkpoint", "VM.revert", "VM.start_on", "VM.resume_on",
		"VM.pool_migrate", "VM.migrate_send":
		return "vm-power-admin"
	case "VM.import":
		return "pool-operator"
	case "http/get_audit_log", "session.create", "session.destroy", "task.destroy", "task.create":
		return "read-only"
	}
	return "vm-admin"
}

// rolesWith lists the roles holding permission, as
// Rbac.disallowed_permission_exn names them.
func rolesWith(permission string) []string {
	min := minRole(permission)
	for i, r := range roleOrder {
		if r == min {
			return roleOrder[:i+1]
		}
	}
	return roleOrder[:1]
}

// permitted reports whether a session of u may call permission.
func (u *userInfo) permitted(permission string) bool {
	if u.superuser() {
		return true // Rbac: the local superuser is never checked
	}
	for _, r := range rolesWith(permission) {
		if r == u.spec.Role {
			return true
		}
	}
	return false
}

// deniedError is the failure of a refused call (rbac.ml
// disallowed_permission_exn).
func deniedError(permission string) *XenError {
	return &XenError{"RBAC_PERMISSION_DENIED", []string{permission,
		"No permission in user session. (Roles with this permission: " + strings.Join(rolesWith(permission), ", ") + ")"}}
}

// userInfo is a user with its session.
type userInfo struct {
	spec    UserSpec
	session string // session ref
	trackid string // MD5 hex of the session ref (context.ml trackid_of_session)
}

func (u *userInfo) superuser() bool { return u.spec.SubjectID == "LOCAL_SUPERUSER" }

// actor is the ground-truth actor of the user's calls.
func (u *userInfo) actor() *record.Actor {
	return &record.Actor{Name: u.spec.Name, SubjectID: u.spec.SubjectID, Originator: u.spec.Originator,
		ClientIP: u.spec.ClientIP, TrackID: u.trackid}
}

// TrackID is the trackid xapi prints for a session ref.
func TrackID(sessionRef string) string {
	s := md5.Sum([]byte(sessionRef))
	return hex.EncodeToString(s[:])
}

// defaultUser is the scenario client when a scenario names no users: root,
// local (no client address).
var defaultUser = UserSpec{Name: "root", SubjectID: "LOCAL_SUPERUSER", Role: "pool-admin"}

func validRole(r string) bool {
	for _, x := range roleOrder {
		if x == r {
			return true
		}
	}
	return false
}

// validateUsers fills user defaults and checks the users and the steps'
// user and denied fields.
func (sc *Scenario) validateUsers() error {
	names := map[string]bool{}
	for i := range sc.Users {
		u := &sc.Users[i]
		if u.Name == "" {
			return fmt.Errorf("scenario %s: user %d has no name", sc.Name, i)
		}
		if names[u.Name] {
			return fmt.Errorf("scenario %s: user %q twice", sc.Name, u.Name)
		}
		names[u.Name] = true
		if u.SubjectID == "" {
			u.SubjectID = "LOCAL_SUPERUSER"
		}
		if u.Role == "" {
			u.Role = "pool-admin"
		}
		if !validRole(u.Role) {
			return fmt.Errorf("scenario %s: user %q: unknown role %q (want one of %s)", sc.Name, u.Name, u.Role,
				strings.Join(roleOrder, ", "))
		}
		if u.Uname == "" {
			u.Uname = u.Name
			if i := strings.LastIndexByte(u.Name, '\\'); i >= 0 && u.SubjectID != "LOCAL_SUPERUSER" {
				u.Uname = u.Name[i+1:]
			}
		}
	}
	for i, st := range sc.Steps {
		where := fmt.Sprintf("scenario %s: step %d", sc.Name, i)
		if st.User != "" && !names[st.User] {
			return fmt.Errorf("%s: unknown user %q", where, st.User)
		}
		if st.Denied {
			if st.Op == "" {
				return fmt.Errorf("%s: only an op can be denied", where)
			}
			u := sc.stepUser(st)
			if u.SubjectID == "LOCAL_SUPERUSER" {
				return fmt.Errorf("%s: user %q is the local superuser, whom RBAC never denies", where, u.Name)
			}
		}
	}
	return nil
}

// stepUser is the user a step runs as.
func (sc *Scenario) stepUser(st Step) UserSpec {
	if st.User != "" {
		for _, u := range sc.Users {
			if u.Name == st.User {
				return u
			}
		}
	}
	if len(sc.Users) > 0 {
		return sc.Users[0]
	}
	return defaultUser
}

// seeded derives a deterministic value for the audit side of the
// simulation (session refs, thread ids, member sessions) without touching
// the engine's id stream, so adding audit lines changes no ref and no
// record id.
func seeded(parts ...string) [32]byte {
	h := sha256.New()
	h.Write([]byte("xapisim-audit"))
	for _, p := range parts {
		h.Write([]byte{0})
		h.Write([]byte(p))
	}
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}

// seededRef is an OpaqueRef derived from parts.
func seededRef(parts ...string) string {
	b := seeded(parts...)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("OpaqueRef:%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// seededInt is a number in [lo, lo+n) derived from parts.
func seededInt(lo, n int, parts ...string) int {
	b := seeded(parts...)
	return lo + int(binary.LittleEndian.Uint64(b[:8])%uint64(n))
}
