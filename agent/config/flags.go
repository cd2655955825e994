package config

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
)

// Flags derives one command-line flag per configuration key (xapi.url →
// --xapi-url) so that the flags can never drift from the file format. A flag
// given on the command line overrides the file.
type Flags struct {
	fs     *pflag.FlagSet
	fields map[string]string // flag name → yaml key path
}

// BindFlags registers a flag for every key of Config on fs. Secrets have no
// flag of their own: only the names of files or variables that hold them.
func BindFlags(fs *pflag.FlagSet) *Flags {
	f := &Flags{fs: fs, fields: map[string]string{}}
	def := Default()
	walk(reflect.ValueOf(&def).Elem(), "", func(path string, v reflect.Value, help string) {
		name := strings.NewReplacer(".", "-", "_", "-").Replace(path)
		f.fields[name] = path
		help += " (config key " + path + ")"
		_, isDuration := v.Interface().(Duration)
		switch {
		case isDuration:
			fs.String(name, fmt.Sprint(display(v)), help)
		case v.Kind() == reflect.Bool:
			fs.Bool(name, v.Bool(), help)
		case v.Kind() == reflect.Int || v.Kind() == reflect.Int64:
			fs.Int64(name, v.Int(), help)
		default:
			fs.String(name, fmt.Sprint(display(v)), help)
		}
	})
	return f
}

// Apply copies the flags set on the command line into cfg.
func (f *Flags) Apply(cfg *Config) error {
	var err error
	walk(reflect.ValueOf(cfg).Elem(), "", func(path string, v reflect.Value, _ string) {
		name := strings.NewReplacer(".", "-", "_", "-").Replace(path)
		if err != nil || !f.fs.Changed(name) {
			return
		}
		s := f.fs.Lookup(name).Value.String()
		if e := set(v, s); e != nil {
			err = fmt.Errorf("--%s: %w", name, e)
		}
	})
	return err
}

func walk(v reflect.Value, prefix string, fn func(path string, v reflect.Value, help string)) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		key, _, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
		if key == "" || key == "-" {
			continue
		}
		path := key
		if prefix != "" {
			path = prefix + "." + key
		}
		fv := v.Field(i)
		if fv.Kind() == reflect.Struct {
			walk(fv, path, fn)
			continue
		}
		if fv.Kind() == reflect.Map || (fv.Kind() == reflect.Slice && fv.Type().Elem().Kind() == reflect.Struct) {
			continue // lists of outputs and maps live in the file only
		}
		fn(path, fv, sf.Tag.Get("help"))
	}
}

func display(v reflect.Value) any {
	if d, ok := v.Interface().(Duration); ok {
		return d.D().String()
	}
	return v.Interface()
}

func set(v reflect.Value, s string) error {
	if _, ok := v.Interface().(Duration); ok {
		d, err := parseDuration(s)
		if err != nil {
			return err
		}
		v.Set(reflect.ValueOf(Duration(d)))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("%q is not true or false", s)
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("%q is not a whole number", s)
		}
		v.SetInt(n)
	case reflect.Slice:
		var parts []string
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				parts = append(parts, p)
			}
		}
		v.Set(reflect.ValueOf(parts))
	default:
		return fmt.Errorf("unsupported type %s", v.Type())
	}
	return nil
}
