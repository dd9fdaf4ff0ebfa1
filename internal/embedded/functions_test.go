package embedded

import (
	"context"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

// TestFunctions: FUNCTION LOAD, FCALL, FCALL_RO, DELETE and FLUSH behave
// as Redis 7's, on top of miniredis's EVAL.
func TestFunctions(t *testing.T) {
	srv, err := Open("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer c.Close()
	ctx := context.Background()
	lib := `#!lua name=lib1
local function set(KEYS, ARGV)
  redis.call('SET', KEYS[1], ARGV[1])
  return { 1, #KEYS, ARGV[1] }
end
redis.register_function('lib1_set', set)
redis.register_function{function_name = 'lib1_get', callback = function(KEYS) return redis.call('GET', KEYS[1]) end, flags = { 'no-writes' }}
`
	if name, err := c.FunctionLoad(ctx, lib).Result(); err != nil || name != "lib1" {
		t.Fatalf("FUNCTION LOAD: %q, %v", name, err)
	}
	if err := c.FunctionLoad(ctx, lib).Err(); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("FUNCTION LOAD again: %v, want already exists", err)
	}
	if err := c.FunctionLoadReplace(ctx, lib).Err(); err != nil {
		t.Fatalf("FUNCTION LOAD REPLACE: %v", err)
	}
	for range 2 {
		got, err := c.FCall(ctx, "lib1_set", []string{"k"}, "v").Slice()
		if err != nil || len(got) != 3 || got[0] != int64(1) || got[1] != int64(1) || got[2] != "v" {
			t.Fatalf("FCALL: %v, %v", got, err)
		}
	}
	if got, err := c.FCallRO(ctx, "lib1_get", []string{"k"}).Text(); err != nil || got != "v" {
		t.Fatalf("FCALL_RO: %q, %v", got, err)
	}
	if err := c.FCall(ctx, "nope", nil).Err(); err == nil || !strings.Contains(err.Error(), "Function not found") {
		t.Fatalf("FCALL of an unknown function: %v", err)
	}
	if err := c.FunctionLoad(ctx, "#!lua name=bad\nthis is not lua").Err(); err == nil {
		t.Fatal("FUNCTION LOAD of code that does not run: no error")
	}
	if err := c.FunctionLoad(ctx, "return 1").Err(); err == nil {
		t.Fatal("FUNCTION LOAD without a name: no error")
	}
	if err := c.FunctionDelete(ctx, "lib1").Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.FCall(ctx, "lib1_set", []string{"k"}, "v").Err(); err == nil {
		t.Fatal("FCALL after FUNCTION DELETE: no error")
	}
	if err := c.FunctionLoad(ctx, lib).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.FunctionFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.FCallRO(ctx, "lib1_get", []string{"k"}).Err(); err == nil || !strings.Contains(err.Error(), "Function not found") {
		t.Fatalf("FCALL_RO after FUNCTION FLUSH: %v", err)
	}
}
