package journal

import (
	"encoding/json"
	"os"
	"strconv"
	"strings"
)

// AnnHolderProcess on a rebind Lease identifies the holder's process, so a
// re-run on the same machine can tell at once that the holder died.
const AnnHolderProcess = "rebind.dev/holder-process"

// process identifies one process on one boot of one machine: the pid alone
// could have been reused, so the kernel's start time of the process and
// the boot id are part of it.
type process struct {
	Host  string `json:"host"`
	Boot  string `json:"boot,omitempty"`
	PID   int    `json:"pid"`
	Start uint64 `json:"start,omitempty"` // clock ticks after boot, /proc/<pid>/stat field 22
}

func selfProcess() process {
	h, _ := os.Hostname()
	start, _ := procStart(os.Getpid())
	return process{Host: h, Boot: bootID(), PID: os.Getpid(), Start: start}
}

func (p process) annotation() string {
	b, _ := json.Marshal(p)
	return string(b)
}

func parseProcess(s string) (process, bool) {
	var p process
	if s == "" || json.Unmarshal([]byte(s), &p) != nil || p.PID <= 0 {
		return p, false
	}
	return p, true
}

// goneFromThisMachine is true only when it is certain: same host and boot,
// and no process with that pid and start time exists. Anything it cannot
// check (another machine, no /proc) counts as alive.
func (p process) goneFromThisMachine() bool {
	self := selfProcess()
	if p.Host == "" || p.Host != self.Host || p.Boot == "" || p.Boot != self.Boot || p.Start == 0 || self.Start == 0 {
		return false
	}
	start, err := procStart(p.PID)
	if os.IsNotExist(err) {
		return true
	}
	return err == nil && start != p.Start
}

func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// procStart reads a process's start time from /proc/<pid>/stat. The
// command name (field 2) may hold spaces and parentheses, so fields are
// counted after its closing parenthesis.
func procStart(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, os.ErrInvalid
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); starttime is field 22.
	if len(f) < 20 {
		return 0, os.ErrInvalid
	}
	return strconv.ParseUint(f[19], 10, 64)
}
