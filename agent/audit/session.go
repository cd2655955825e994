package audit

import "strings"

// ParseSessionCreate reads the message of xensource.log's Session.create
// line (xapi_session.ml, level info, brand xapi_session; the message as
// xensource.Line.Message returns it, unescaped):
//
//	Session.create trackid=<32 hex> pool=<bool> uname=<u> originator=<o>
//	is_local_superuser=<bool> auth_user_sid=<sid> parent=trackid=<32 hex>
//
// uname and originator may hold spaces ("HTTPS 10.0.0.5 using Basic auth"),
// so fields are cut at the next key, not at a space. Pool (intra-pool)
// sessions are reported too; callers may skip them.
func ParseSessionCreate(msg string) (s Session, pool bool, ok bool) {
	rest, ok := strings.CutPrefix(msg, "Session.create trackid=")
	if !ok {
		return s, false, false
	}
	field := func(key, next string) (string, bool) {
		i := strings.Index(rest, key)
		if i < 0 {
			return "", false
		}
		v := rest[i+len(key):]
		if next != "" {
			j := strings.Index(v, next)
			if j < 0 {
				return "", false
			}
			v = v[:j]
		}
		return v, true
	}
	sp := strings.IndexByte(rest, ' ')
	if sp != 32 || !isHexString(rest[:32]) {
		return s, false, false
	}
	s.TrackID = rest[:32]
	p, ok1 := field(" pool=", " ")
	// Old builds (a 2013 line the reference quotes) have no originator=.
	u, ok2 := field(" uname=", " originator=")
	o, ok3 := field(" originator=", " is_local_superuser=")
	if !ok2 {
		u, ok2 = field(" uname=", " is_local_superuser=")
		o, ok3 = "", true
	}
	lsu, ok4 := field(" is_local_superuser=", " ")
	sid, ok5 := field(" auth_user_sid=", " parent=")
	if !(ok1 && ok2 && ok3 && ok4 && ok5) {
		return Session{}, false, false
	}
	s.Uname, s.Originator, s.LocalSuperuser, s.SubjectID = u, o, lsu == "true", sid
	return s, p == "true", true
}

func isHexString(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isHex(s[i]) {
			return false
		}
	}
	return s != ""
}
