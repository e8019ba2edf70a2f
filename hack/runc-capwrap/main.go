// runc-capwrap is an OCI runtime that edits the container's spec, then runs runc.
//
// On this kind of VM CAP_SYS_RESOURCE is missing from the capability bounding set, so runc
// fails with "unable to apply caps: operation not permitted" whenever a spec asks for every
// capability (docker run --privileged: kind's nodes; privileged pods inside them). Before
// `create`/`run` it removes from the bundle's config.json, and before `exec` from the
// --process file, each capability the bounding set lacks, and raises a negative oomScoreAdj
// (the pod sandbox asks for -998, which also needs CAP_SYS_RESOURCE) to 0. On a host whose
// bounding set is complete nothing changes. It is registered with dockerd
// (--add-runtime/--default-runtime) and, inside the kind node image, as containerd's runc
// BinaryName. Static Go: the node image has no interpreter.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Capability numbers from linux/capability.h.
var capNumbers = map[string]uint{
	"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3,
	"CAP_FSETID": 4, "CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8,
	"CAP_LINUX_IMMUTABLE": 9, "CAP_NET_BIND_SERVICE": 10, "CAP_NET_BROADCAST": 11,
	"CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_IPC_LOCK": 14, "CAP_IPC_OWNER": 15,
	"CAP_SYS_MODULE": 16, "CAP_SYS_RAWIO": 17, "CAP_SYS_CHROOT": 18, "CAP_SYS_PTRACE": 19,
	"CAP_SYS_PACCT": 20, "CAP_SYS_ADMIN": 21, "CAP_SYS_BOOT": 22, "CAP_SYS_NICE": 23,
	"CAP_SYS_RESOURCE": 24, "CAP_SYS_TIME": 25, "CAP_SYS_TTY_CONFIG": 26, "CAP_MKNOD": 27,
	"CAP_LEASE": 28, "CAP_AUDIT_WRITE": 29, "CAP_AUDIT_CONTROL": 30, "CAP_SETFCAP": 31,
	"CAP_MAC_OVERRIDE": 32, "CAP_MAC_ADMIN": 33, "CAP_SYSLOG": 34, "CAP_WAKE_ALARM": 35,
	"CAP_BLOCK_SUSPEND": 36, "CAP_AUDIT_READ": 37, "CAP_PERFMON": 38, "CAP_BPF": 39,
	"CAP_CHECKPOINT_RESTORE": 40,
}

func boundingSet() (uint64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "CapBnd:"); ok {
			return strconv.ParseUint(strings.TrimSpace(rest), 16, 64)
		}
	}
	return 0, fmt.Errorf("no CapBnd in /proc/self/status")
}

// allowed keeps a capability the bounding set has; unknown (newer) names are kept too,
// runc decides about those.
func allowed(name string, bnd uint64) bool {
	n, known := capNumbers[name]
	return !known || bnd&(1<<n) != 0
}

func filterCaps(caps map[string]any, bnd uint64) {
	for _, set := range []string{"bounding", "effective", "inheritable", "permitted", "ambient"} {
		list, ok := caps[set].([]any)
		if !ok {
			continue
		}
		kept := make([]any, 0, len(list))
		for _, c := range list {
			if s, ok := c.(string); !ok || allowed(s, bnd) {
				kept = append(kept, c)
			}
		}
		caps[set] = kept
	}
}

func fixProcess(process map[string]any, bnd uint64) {
	if caps, ok := process["capabilities"].(map[string]any); ok {
		filterCaps(caps, bnd)
	}
	if adj, ok := process["oomScoreAdj"].(float64); ok && adj < 0 && bnd&(1<<capNumbers["CAP_SYS_RESOURCE"]) == 0 {
		process["oomScoreAdj"] = 0
	}
}

// rewrite edits a JSON file in place; isSpec: a whole config.json, else a process object.
func rewrite(path string, isSpec bool, bnd uint64) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var doc map[string]any
	if err := json.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if isSpec {
		if p, ok := doc["process"].(map[string]any); ok {
			fixProcess(p, bnd)
		}
	} else {
		fixProcess(doc, bnd)
	}
	out, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	info, err := os.Stat(path)
	if err != nil {
		return err
	}
	return os.WriteFile(path, out, info.Mode().Perm())
}

// flagValue finds `--name value`, `--name=value`, `-s value` or `-s=value`.
func flagValue(args []string, long, short string) string {
	for i, a := range args {
		for _, f := range []string{long, short} {
			if a == f && i+1 < len(args) {
				return args[i+1]
			}
			if v, ok := strings.CutPrefix(a, f+"="); ok {
				return v
			}
		}
	}
	return ""
}

// command is runc's subcommand: the first argument that is not a global flag or its value.
func command(args []string) (string, []string) {
	withValue := map[string]bool{"--root": true, "--log": true, "--log-format": true, "--criu": true, "--rootless": true}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			return a, args[i+1:]
		}
		if withValue[a] {
			i++
		}
	}
	return "", nil
}

func realRunc() (string, error) {
	if p := os.Getenv("CAPWRAP_RUNC"); p != "" {
		return p, nil
	}
	self, _ := os.Executable()
	for _, dir := range append(filepath.SplitList(os.Getenv("PATH")), "/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin", "/sbin", "/bin") {
		p := filepath.Join(dir, "runc")
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			if r, _ := filepath.EvalSymlinks(p); r != self {
				return p, nil
			}
		}
	}
	return exec.LookPath("runc")
}

func main() {
	args := os.Args[1:]
	bnd, err := boundingSet()
	if err != nil {
		fmt.Fprintln(os.Stderr, "runc-capwrap:", err)
		os.Exit(1)
	}
	switch cmd, rest := command(args); cmd {
	case "create", "run":
		bundle := flagValue(rest, "--bundle", "-b")
		if bundle == "" {
			bundle = "."
		}
		err = rewrite(filepath.Join(bundle, "config.json"), true, bnd)
	case "exec":
		if p := flagValue(rest, "--process", "-p"); p != "" {
			err = rewrite(p, false, bnd)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "runc-capwrap:", err)
		os.Exit(1)
	}
	runc, err := realRunc()
	if err != nil {
		fmt.Fprintln(os.Stderr, "runc-capwrap: runc not found:", err)
		os.Exit(1)
	}
	err = syscall.Exec(runc, append([]string{"runc"}, args...), os.Environ())
	fmt.Fprintln(os.Stderr, "runc-capwrap: exec", runc, err)
	os.Exit(1)
}
