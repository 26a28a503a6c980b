// Runs Perimeter's Argo CD health checks in gopher-lua, the Lua 5.1 VM Argo CD embeds, set up as
// Argo CD sets it up for a script from argocd-cm (util/lua/lua.go, runLua): the standard
// libraries skipped, then only package, base and table opened (Argo CD adds a reduced os, which
// these scripts do not use), the object converted to Lua
// values the way Argo CD converts it and set as the global `obj`, the script run with DoString,
// and the value it leaves on the stack read as the health. The samples are the ones
// health_test.lua runs under Debian's lua5.4; both must give the same answers.
//
//	go run . <repository root>
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	lua "github.com/yuin/gopher-lua"
)

type sample struct {
	Name   string `json:"name"`
	Health struct {
		Status  string `json:"status"`
		Message string `json:"message"`
	} `json:"health"`
	Object map[string]any `json:"object"`
}

// Argo CD's health statuses; any other is shown as Unknown with an error.
var validHealth = map[string]bool{
	"Healthy": true, "Progressing": true, "Degraded": true, "Suspended": true, "Missing": true,
	"Unknown": true,
}

// toLua converts decoded JSON as Argo CD's decodeValue converts an unstructured object: numbers
// become LNumber, arrays sequences, objects tables keyed by name, null nil.
func toLua(l *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case []any:
		array := l.CreateTable(len(v), 0)
		for _, item := range v {
			array.Append(toLua(l, item))
		}
		return array
	case map[string]any:
		table := l.CreateTable(0, len(v))
		for key, item := range v {
			table.RawSetH(lua.LString(key), toLua(l, item))
		}
		return table
	}
	return lua.LNil
}

func runHealth(script string, object map[string]any) (status, message string, err error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true},
			lua.LString(lib.name)); err != nil {
			return "", "", err
		}
	}
	l.SetGlobal("obj", toLua(l, object))
	if err := l.DoString(script); err != nil {
		return "", "", err
	}
	result, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return "", "", fmt.Errorf("the script returned %s, not a table", l.Get(-1).Type())
	}
	status = lua.LVAsString(result.RawGetString("status"))
	if !validHealth[status] {
		return "", "", fmt.Errorf("the script returned the status %q", status)
	}
	return status, lua.LVAsString(result.RawGetString("message")), nil
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: go run . <repository root>")
		os.Exit(2)
	}
	root := os.Args[1]
	failures, passed := 0, 0
	for _, kind := range []struct{ kind, data string }{
		{"AgentEnvironment", "agentenvironment.json"},
		{"McpTunnel", "mcptunnel.json"},
	} {
		script, err := os.ReadFile(
			filepath.Join(root, "deploy/argocd/perimeter.dev", kind.kind, "health.lua"))
		if err != nil {
			fmt.Fprintln(os.Stderr, "FAIL", err)
			os.Exit(1)
		}
		data, err := os.ReadFile(filepath.Join(root, "tests/integration/argocd/testdata", kind.data))
		if err != nil {
			fmt.Fprintln(os.Stderr, "FAIL", err)
			os.Exit(1)
		}
		var samples []sample
		if err := json.Unmarshal(data, &samples); err != nil {
			fmt.Fprintln(os.Stderr, "FAIL", kind.data+":", err)
			os.Exit(1)
		}
		for _, s := range samples {
			status, message, err := runHealth(string(script), s.Object)
			switch {
			case err != nil:
				failures++
				fmt.Fprintf(os.Stderr, "FAIL %s / %s: %v\n", kind.kind, s.Name, err)
			case status != s.Health.Status || message != s.Health.Message:
				failures++
				fmt.Fprintf(os.Stderr, "FAIL %s / %s:\n  want %s %q\n  got  %s %q\n", kind.kind,
					s.Name, s.Health.Status, s.Health.Message, status, message)
			default:
				passed++
			}
		}
		fmt.Printf("%s: %d samples in gopher-lua\n", kind.kind, len(samples))
	}
	fmt.Printf("%d samples passed, %d failures\n", passed, failures)
	if failures > 0 || passed == 0 {
		os.Exit(1)
	}
}
