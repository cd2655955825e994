package record

import (
	"bytes"
	"encoding/json"
	"math/rand"
	"reflect"
	"testing"
	"time"
)

// randomRecord fills every field of Record by reflection, so a field added
// to Record later is exercised without touching this test.
func randomRecord(rng *rand.Rand) Record {
	strs := []string{"", "", "a", "vm-01", "Café", "quote\" back\\slash", "ctl\x01\x1f\n\t\r\b\f", "\xff\xfeinvalid", "\u2028sep\u007f", "<&>", "DOMAIN\\user"}
	var r Record
	var fill func(v reflect.Value)
	fill = func(v reflect.Value) {
		switch v.Kind() {
		case reflect.String:
			v.SetString(strs[rng.Intn(len(strs))])
		case reflect.Slice:
			if v.Type().Elem().Kind() == reflect.String && rng.Intn(2) == 0 {
				n := rng.Intn(3)
				s := reflect.MakeSlice(v.Type(), n, n)
				for i := 0; i < n; i++ {
					fill(s.Index(i))
				}
				v.Set(s)
			}
		case reflect.Int64:
			v.SetInt(rng.Int63n(1000))
		case reflect.Pointer:
			if rng.Intn(2) == 0 {
				p := reflect.New(v.Type().Elem())
				fill(p.Elem())
				v.Set(p)
			}
		case reflect.Struct:
			if v.Type() == reflect.TypeOf(time.Time{}) {
				if rng.Intn(4) > 0 {
					v.Set(reflect.ValueOf(time.UnixMilli(rng.Int63n(4e12)).Add(time.Duration(rng.Intn(1e6)))))
				}
				return
			}
			for i := 0; i < v.NumField(); i++ {
				if v.Type().Field(i).IsExported() {
					fill(v.Field(i))
				}
			}
		}
	}
	fill(reflect.ValueOf(&r).Elem())
	return r
}

// genericCanonical is the definition: the record's JSON, without "chain",
// canonicalised by RFC 8785.
func genericCanonical(t testing.TB, r *Record) []byte {
	js, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	d := json.NewDecoder(bytes.NewReader(js))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		t.Fatal(err)
	}
	delete(m, "chain")
	return AppendJCS(nil, m)
}

func TestCanonicalMatchesDefinition(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 5000; i++ {
		r := randomRecord(rng)
		got, want := AppendCanonical(nil, &r), genericCanonical(t, &r)
		if !bytes.Equal(got, want) {
			t.Fatalf("record %d:\n got %s\nwant %s", i, got, want)
		}
		// What a verifier reads back (the JSON) hashes the same.
		js, _ := json.Marshal(r)
		var back Record
		if err := json.Unmarshal(js, &back); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(AppendCanonical(nil, &back), got) {
			t.Fatalf("record %d: canonical form changes through JSON:\n%s\n%s", i, AppendCanonical(nil, &back), got)
		}
	}
}

func TestChainHashKnownAnswer(t *testing.T) {
	r := sample()
	r.Actor = &Actor{Name: `EXAMPLE01\vmadmin`, SubjectID: "S-1-5-21-1", ClientIP: "10.0.0.7"}
	want := `{"activity":"clone","actor":{"client_ip":"10.0.0.7","name":"EXAMPLE01\\vmadmin","subject_id":"S-1-5-21-1"},"end":"2024-03-01T09:00:12.500Z","host_name":"xen1","host_uuid":"h1","id":"` + r.ID + `","operation":"clone","parent_vm_uuid":"origin","pool_uuid":"pool-1","result":"success","source":"xapi","start":"2024-03-01T09:00:10.000Z","task_id":"8b8a1b914f63","task_uuid":"t1","vm_name":"vm1","vm_uuid":"vm1"}`
	if got := string(AppendCanonical(nil, &r)); got != want {
		t.Fatalf("canonical:\n got %s\nwant %s", got, want)
	}
	h1 := ChainHash(GenesisHash, &r)
	r.Chain = &Chain{Seq: 9, Prev: "x", Hash: "y"}
	if ChainHash(GenesisHash, &r) != h1 {
		t.Fatal("the chain member must not be hashed")
	}
	r2 := r
	r2.VMName = "vm2"
	if ChainHash(GenesisHash, &r2) == h1 || ChainHash(h1, &r) == h1 {
		t.Fatal("hash must change with the record and with prev")
	}
}

func FuzzCanonical(f *testing.F) {
	f.Add(int64(1))
	f.Fuzz(func(t *testing.T, seed int64) {
		r := randomRecord(rand.New(rand.NewSource(seed)))
		if got, want := AppendCanonical(nil, &r), genericCanonical(t, &r); !bytes.Equal(got, want) {
			t.Fatalf("got %s\nwant %s", got, want)
		}
	})
}
