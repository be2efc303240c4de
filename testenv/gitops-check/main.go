// gitops-check evaluates a Kubernetes object the way two GitOps tools do, using their real libraries:
//
//	gitops-check kstatus                                   < object   (Flux, kpt, cli-utils: kstatus)
//	gitops-check argo-health [--open-libs] HEALTH.lua      < object   (Argo CD: resource health Lua)
//	gitops-check argo-health-test [--open-libs] DIR        (Argo CD: DIR/health_test.yaml against DIR/health.lua)
//
// The object is JSON or YAML. kstatus and argo-health print one JSON line {"status":..,"message":..};
// kstatus fails only on unreadable input, argo-health also on a Lua error or a missing or invalid status.
// --open-libs is Argo's useOpenLibs: without it, the script sees what an argocd-cm health override gets
// by default (no string, math or io library). hack/build-gitops-tools.sh builds this file alone.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	luajson "layeh.com/gopher-json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"
)

type health struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	args := os.Args[1:]
	openLibs := len(args) > 1 && strings.HasPrefix(args[0], "argo-") && args[1] == "--open-libs"
	if openLibs {
		args = append(args[:1], args[2:]...)
	}
	var err error
	switch {
	case len(args) == 1 && args[0] == "kstatus":
		err = kstatus()
	case len(args) == 2 && args[0] == "argo-health":
		err = argoHealth(args[1], openLibs)
	case len(args) == 2 && args[0] == "argo-health-test":
		err = argoHealthTest(args[1], openLibs)
	default:
		err = errors.New("usage: gitops-check kstatus < obj | argo-health [--open-libs] HEALTH.lua < obj | argo-health-test [--open-libs] DIR")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gitops-check:", err)
		os.Exit(1)
	}
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

func kstatus() error {
	data, err := io.ReadAll(os.Stdin)
	if err != nil {
		return err
	}
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return err
	}
	// The unstructured JSON decoder keeps integers int64, as objects read from the API server have them:
	// kstatus reads metadata.generation and status.observedGeneration with NestedInt64.
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(js); err != nil {
		return err
	}
	res, err := status.Compute(u)
	if err != nil {
		// As cli-utils' pollers do (pkg/kstatus/polling/statusreaders/common.go): Unknown, with the error.
		return printJSON(health{string(status.UnknownStatus), err.Error()})
	}
	return printJSON(health{string(res.Status), res.Message})
}

// readObject decodes like Argo CD's health test (util/lua/health_test.go, getObj): sigs.k8s.io/yaml into a map.
func readObject(r io.Reader) (map[string]any, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	obj := map[string]any{}
	return obj, yaml.Unmarshal(data, &obj)
}

func argoHealth(script string, openLibs bool) error {
	src, err := os.ReadFile(script)
	if err != nil {
		return err
	}
	obj, err := readObject(os.Stdin)
	if err != nil {
		return err
	}
	h, err := executeHealthLua(obj, string(src), openLibs)
	if err != nil {
		return err
	}
	// Argo CD would show an empty status (no health) or Unknown; for a checker both are failures.
	if h.Status == "" {
		return errors.New("script returned no table with a status (Argo CD would assess no health)")
	}
	if h.Message == invalidHealthStatus {
		return errors.New("script returned an invalid status (Argo CD would show Unknown: " + invalidHealthStatus + ")")
	}
	return printJSON(h)
}

func argoHealthTest(dir string, openLibs bool) error {
	src, err := os.ReadFile(filepath.Join(dir, "health.lua"))
	if err != nil {
		return err
	}
	data, err := os.ReadFile(filepath.Join(dir, "health_test.yaml"))
	if err != nil {
		return err
	}
	// Argo CD's resource_customizations/<group>/<kind>/health_test.yaml format (util/lua/health_test.go).
	// Argo's test picks the script by each input's group and kind; here every input runs DIR/health.lua.
	var suite struct {
		Tests []struct {
			InputPath    string `json:"inputPath"`
			HealthStatus health `json:"healthStatus"`
		} `json:"tests"`
	}
	if err := yaml.Unmarshal(data, &suite); err != nil {
		return err
	}
	passed, failed := 0, 0
	for _, tc := range suite.Tests {
		var got health
		f, err := os.Open(filepath.Join(dir, tc.InputPath))
		if err == nil {
			var obj map[string]any
			obj, err = readObject(f)
			f.Close()
			if err == nil {
				got, err = executeHealthLua(obj, string(src), openLibs)
			}
		}
		switch {
		case err != nil:
			failed++
			fmt.Printf("FAIL %s: error: %v\n", tc.InputPath, err)
		case got != tc.HealthStatus:
			failed++
			fmt.Printf("FAIL %s:\n  want status=%q message=%q\n  got  status=%q message=%q\n",
				tc.InputPath, tc.HealthStatus.Status, tc.HealthStatus.Message, got.Status, got.Message)
		default:
			passed++
			fmt.Printf("ok   %s: %s %q\n", tc.InputPath, got.Status, got.Message)
		}
	}
	fmt.Printf("%d passed, %d failed\n", passed, failed)
	if failed > 0 || passed == 0 {
		return fmt.Errorf("%s: %d of %d cases failed", dir, failed, len(suite.Tests))
	}
	return nil
}

const invalidHealthStatus = "Lua returned an invalid health status" // Argo CD's util/lua/lua.go

// executeHealthLua mirrors Argo CD's VM.ExecuteHealthLua and runLua (util/lua/lua.go): a fresh state with
// only the package, base and table libraries and a safe os (time and date; reachable as require("os")),
// unless openLibs (Argo's useOpenLibs, on for its built-in scripts and its tests), which opens every
// gopher-lua library; global obj is the object; a 1 s timeout; the returned table's status and message.
func executeHealthLua(obj map[string]any, script string, openLibs bool) (health, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: !openLibs})
	defer l.Close()
	for _, lib := range []struct {
		n string
		f lua.LGFunction
	}{{lua.LoadLibName, lua.OpenPackage}, {lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}, {lua.OsLibName, lua.OpenOs}} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.f), Protect: true}, lua.LString(lib.n)); err != nil {
			return health{}, err
		}
	}
	// Argo's safe os holds gopher-lua's os.time and os.date (util/lua/oslib_safe.go, copied from gopher-lua).
	full := l.GetGlobal(lua.OsLibName).(*lua.LTable)
	safe := l.NewTable()
	for _, name := range []string{"time", "date"} {
		safe.RawSetString(name, full.RawGetString(name))
	}
	if !openLibs { // the full os was opened above only to take those two functions from it
		l.SetGlobal(lua.OsLibName, lua.LNil)
		l.SetField(l.GetField(l.Get(lua.RegistryIndex), "_LOADED"), lua.OsLibName, lua.LNil)
	}
	l.PreloadModule(lua.OsLibName, func(l *lua.LState) int { l.Push(safe); return 1 })

	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, obj))
	if err := l.DoString(script); err != nil {
		var apiErr *lua.ApiError
		if errors.As(err, &apiErr) && apiErr.Type == lua.ApiErrorRun {
			apiErr.StackTrace = "" // Argo drops the Lua stack trace from run errors
		}
		return health{}, err
	}
	ret := l.Get(-1)
	switch ret.Type() {
	case lua.LTNil:
		return health{}, nil
	case lua.LTTable:
	default:
		return health{}, fmt.Errorf("expect table output from Lua script, not %s", ret.Type())
	}
	// Encoded to JSON and decoded into {status, message} as Argo does; a type error (an empty table
	// encodes as [], or a field is no string) gives an empty status, a status outside the set Unknown.
	js, err := luajson.Encode(ret)
	if err != nil {
		return health{}, err
	}
	var h health
	if err := json.Unmarshal(js, &h); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			return health{}, nil
		}
		return health{}, err
	}
	switch h.Status {
	case "Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown":
		return h, nil
	}
	return health{"Unknown", invalidHealthStatus}, nil
}

// toLua mirrors decodeValue in Argo CD's util/lua/lua.go: maps and lists become tables, numbers LNumber.
func toLua(l *lua.LState, v any) lua.LValue {
	switch c := v.(type) {
	case bool:
		return lua.LBool(c)
	case float64:
		return lua.LNumber(c)
	case int64:
		return lua.LNumber(c)
	case string:
		return lua.LString(c)
	case json.Number:
		return lua.LString(c)
	case []any:
		t := l.CreateTable(len(c), 0)
		for _, item := range c {
			t.Append(toLua(l, item))
		}
		return t
	case map[string]any:
		t := l.CreateTable(0, len(c))
		for k, item := range c {
			t.RawSetH(lua.LString(k), toLua(l, item))
		}
		return t
	}
	return lua.LNil
}
