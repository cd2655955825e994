package xapisim

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// rawCall posts an XML-RPC call built with our encoder and returns the body.
func rawCall(t testing.TB, url, method string, params ...any) []byte {
	t.Helper()
	var b bytes.Buffer
	b.WriteString(`<?xml version="1.0"?><methodCall><methodName>` + method + `</methodName><params>`)
	for _, p := range params {
		b.WriteString("<param>")
		writeXMLValue(&b, p)
		b.WriteString("</param>")
	}
	b.WriteString("</params></methodCall>")
	resp, err := http.Post(url, "text/xml", &b)
	if err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("%s: HTTP %d: %s", method, resp.StatusCode, body)
	}
	return body
}

// parseResponse decodes a methodResponse with the request parser's value
// reader: the envelope struct as map[string]any.
func parseResponse(body []byte) (any, error) {
	d := xml.NewDecoder(bytes.NewReader(body))
	for _, want := range []string{"methodResponse", "params", "param", "value"} {
		se, err := nextStart(d)
		if err != nil {
			return nil, err
		}
		if se.Name.Local != want {
			return nil, fmt.Errorf("got %s want %s", se.Name.Local, want)
		}
	}
	return parseValue(d)
}

// call performs method and returns Value, or fails the test on a Failure.
func call(t testing.TB, url, method string, params ...any) any {
	t.Helper()
	v, desc := callErr(t, url, method, params...)
	if desc != nil {
		t.Fatalf("%s: failure %v", method, desc)
	}
	return v
}

// callErr returns Value or the ErrorDescription.
func callErr(t testing.TB, url, method string, params ...any) (any, []string) {
	t.Helper()
	body := rawCall(t, url, method, params...)
	v, err := parseResponse(body)
	if err != nil {
		t.Fatalf("%s: bad response %v: %s", method, err, body)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return v, nil // bare
	}
	switch m["Status"] {
	case "Success":
		return m["Value"], nil
	case "Failure":
		var desc []string
		for _, x := range m["ErrorDescription"].([]any) {
			desc = append(desc, x.(string))
		}
		return nil, desc
	}
	t.Fatalf("%s: no Status: %s", method, body)
	return nil, nil
}

func login(t testing.TB, url string) string {
	t.Helper()
	return call(t, url, "session.login_with_password", "root", "xapisim", "1.0", "test").(string)
}

// startServer runs a server for sc (nil = empty pool).
func startServer(t testing.TB, cfg Config) *Server {
	t.Helper()
	s := New(cfg)
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// eventsOf flattens an event.from batch into "class op name/ref" strings.
type ev struct {
	class, op, ref string
	snap           map[string]any
}

func batchEvents(v any) ([]ev, string) {
	m := v.(map[string]any)
	var out []ev
	for _, x := range m["events"].([]any) {
		e := x.(map[string]any)
		snap, _ := e["snapshot"].(map[string]any)
		out = append(out, ev{e["class"].(string), e["operation"].(string), e["ref"].(string), snap})
	}
	return out, m["token"].(string)
}

func waitFor(t testing.TB, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if f() {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

func hasPrefix(s, p string) bool { return strings.HasPrefix(s, p) }
