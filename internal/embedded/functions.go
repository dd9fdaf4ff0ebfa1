package embedded

import (
	"bufio"
	"bytes"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/alicebob/miniredis/v2/server"
)

// miniredis has Lua scripts (EVAL) but not Redis 7's functions, which the
// store calls (FCALL) so that users of nodes and hubs need no EVAL. So this
// store adds FUNCTION LOAD [REPLACE], FUNCTION DELETE, FUNCTION FLUSH,
// FCALL and FCALL_RO, on top of EVAL: a function is called as an EVAL of
// its library's code behind a stand-in for redis.register_function, which
// then runs the function asked for with the call's keys and arguments.
// miniredis caches the compiled script, so a call costs what an EVAL of a
// cached script does. Loading runs the library once the same way, to learn
// the names of its functions (and to refuse code that does not run).
// One difference: a library's top-level locals are made again on every
// call here, where Redis keeps them from the load on; the store's library
// keeps all its state inside its functions, so it runs the same on both.
// There are no ACLs here, and no script kills: this store serves one
// process of one operator.

// functions is the libraries loaded: their code, by name, and which
// library holds each function.
type functions struct {
	mu    sync.Mutex
	libs  map[string]string // library name -> code, without its first line
	owner map[string]string // function name -> library name
}

// shebang is the first line of a library: #!lua name=<name>.
var shebang = regexp.MustCompile(`^#!lua name=([A-Za-z0-9_]+)[ \t]*\n`)

func (s *Server) registerFunctions() error {
	f := &functions{libs: map[string]string{}, owner: map[string]string{}}
	srv := s.m.Server()
	for name, h := range map[string]server.Cmd{
		"FUNCTION": func(c *server.Peer, _ string, args []string) { f.function(srv, c, args) },
		"FCALL":    func(c *server.Peer, _ string, args []string) { f.call(srv, c, "EVAL", args) },
		"FCALL_RO": func(c *server.Peer, _ string, args []string) { f.call(srv, c, "EVAL_RO", args) },
	} {
		if err := srv.Register(name, h); err != nil {
			return fmt.Errorf("embedded store: %w", err)
		}
	}
	return nil
}

// call runs FCALL (as eval) of function args[0] with the rest of args
// (numkeys, keys, arguments).
func (f *functions) call(srv *server.Server, c *server.Peer, eval string, args []string) {
	if len(args) < 2 {
		c.WriteError("ERR wrong number of arguments for 'fcall' command")
		return
	}
	f.mu.Lock()
	code, ok := f.libs[f.owner[args[0]]]
	f.mu.Unlock()
	if !ok {
		c.WriteError("ERR Function not found")
		return
	}
	srv.Dispatch(c, append([]string{eval, runner(code, "return __fn(KEYS, ARGV)", args[0])}, args[1:]...))
}

// runner is an EVAL script that runs a library's code with
// redis.register_function collecting its functions, then tail with the
// function named fn as __fn and every function's name in __names.
func runner(code, tail, fn string) string {
	return `local __fns, __names = {}, {}
local redis = setmetatable({ register_function = function(a, b)
  local name, cb = a, b
  if type(a) == 'table' then name, cb = a.function_name, a.callback end
  __fns[name] = cb
  __names[#__names + 1] = name
end }, { __index = redis })
` + code + `
local __fn = __fns[` + strconv.Quote(fn) + `]
` + tail + "\n"
}

// function runs FUNCTION's subcommands LOAD, DELETE and FLUSH.
func (f *functions) function(srv *server.Server, c *server.Peer, args []string) {
	sub := ""
	if len(args) > 0 {
		sub = strings.ToUpper(args[0])
	}
	switch {
	case sub == "LOAD" && (len(args) == 2 || len(args) == 3 && strings.EqualFold(args[1], "REPLACE")):
		f.load(srv, c, args[len(args)-1], len(args) == 3)
	case sub == "DELETE" && len(args) == 2:
		f.mu.Lock()
		defer f.mu.Unlock()
		if _, ok := f.libs[args[1]]; !ok {
			c.WriteError("ERR Library not found")
			return
		}
		f.drop(args[1])
		c.WriteOK()
	case sub == "FLUSH" && len(args) <= 2:
		f.mu.Lock()
		defer f.mu.Unlock()
		clear(f.libs)
		clear(f.owner)
		c.WriteOK()
	default:
		c.WriteError("ERR unknown or unsupported FUNCTION subcommand (the embedded store has LOAD, DELETE and FLUSH)")
	}
}

// load is FUNCTION LOAD [REPLACE] code: it runs the library once to learn
// its functions' names.
func (f *functions) load(srv *server.Server, c *server.Peer, code string, replace bool) {
	m := shebang.FindStringSubmatch(code)
	if m == nil {
		c.WriteError("ERR library code must start with #!lua name=<library name>")
		return
	}
	name, body := m[1], code[len(m[0]):]
	names, err := functionNames(srv, body)
	if err != nil {
		c.WriteError(err.Error())
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.libs[name]; ok && !replace {
		c.WriteError("ERR Library '" + name + "' already exists")
		return
	}
	for _, fn := range names {
		if lib, ok := f.owner[fn]; ok && lib != name {
			c.WriteError("ERR Function " + fn + " already exists")
			return
		}
	}
	f.drop(name)
	f.libs[name] = body
	for _, fn := range names {
		f.owner[fn] = name
	}
	c.WriteBulk(name)
}

// drop forgets library name and its functions; f.mu is held.
func (f *functions) drop(name string) {
	delete(f.libs, name)
	for fn, lib := range f.owner {
		if lib == name {
			delete(f.owner, fn)
		}
	}
}

// functionNames runs a library's code as an EVAL, on a connection of its
// own, and returns the names it registered.
func functionNames(srv *server.Server, body string) ([]string, error) {
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	srv.Dispatch(server.NewPeer(w), []string{"EVAL", runner(body, "return __names", ""), "0"})
	w.Flush()
	r := bufio.NewReader(&buf)
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, fmt.Errorf("ERR library: no reply")
	}
	line = strings.TrimRight(line, "\r\n")
	if strings.HasPrefix(line, "-") {
		return nil, fmt.Errorf("ERR Error registering functions: %s", line[1:])
	}
	n, err := strconv.Atoi(strings.TrimPrefix(line, "*"))
	if err != nil || !strings.HasPrefix(line, "*") || n == 0 {
		return nil, fmt.Errorf("ERR No functions registered")
	}
	names := make([]string, 0, n)
	for range n {
		if _, err := r.ReadString('\n'); err != nil { // $<length>
			return nil, fmt.Errorf("ERR library: short reply")
		}
		s, err := r.ReadString('\n')
		if err != nil {
			return nil, fmt.Errorf("ERR library: short reply")
		}
		names = append(names, strings.TrimRight(s, "\r\n"))
	}
	return names, nil
}
