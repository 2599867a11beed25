// Package config reads tp's configuration files: the user's ($XDG_CONFIG_HOME/tp/config.yaml,
// or $TP_CONFIG), which holds tp connect's defaults, and the project's (tp.yaml, found upward
// from the current folder as git finds .git), which names intercepts and tp run's settings.
// Flags win over the files, the project's file over the user's, the files over defaults:
// Apply sets a command's flags the command line left unset.
package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/tpdev/tp/remote"
)

// UserEnv names the user file instead of $XDG_CONFIG_HOME/tp/config.yaml.
const UserEnv = "TP_CONFIG"

// ProjectFile is the project file's name.
const ProjectFile = "tp.yaml"

// Origin is where a value came from: a flag, a file's line, or tp's default (neither).
type Origin struct {
	Flag         bool
	Path         string
	Line, Column int
}

func (o Origin) String() string {
	switch {
	case o.Flag:
		return "flag"
	case o.Path == "":
		return "default"
	case o.Line == 0:
		return o.Path
	}
	return fmt.Sprintf("%s:%d", o.Path, o.Line)
}

// Setting is one key of a file and the command flag it sets.
type Setting struct {
	Key    string   // the file's key
	Flag   string   // the command's flag; "" for none (an intercept's workload)
	Values []string // one for a single value; a list's, each given as the flag once
	List   bool
	Origin Origin
}

// Intercept is one of the project's named intercepts.
type Intercept struct {
	Name     string
	Settings []Setting
	Origin   Origin
}

// Workload is the intercept's workload: its workload key, else its name.
func (ic *Intercept) Workload() string {
	for _, s := range ic.Settings {
		if s.Key == "workload" {
			return s.Values[0]
		}
	}
	return ic.Name
}

// File is one configuration file, read.
type File struct {
	Path         string
	Namespace    *Setting    // the project's
	Connect      []Setting   // the user's
	Run          []Setting   // the project's
	Intercepts   []Intercept // the project's, in the file's order
	interceptsAt Origin
}

// Files are the user's file and the project's, each nil when there is none.
type Files struct {
	User, Project *File
}

// UserPath is the user file's path: $TP_CONFIG, else config.yaml in tp's folder of the
// user's configuration folder (os.UserConfigDir: $XDG_CONFIG_HOME or ~/.config, %AppData%,
// ~/Library/Application Support). explicit says $TP_CONFIG named it.
func UserPath(getenv func(string) string) (path string, explicit bool, err error) {
	if p := getenv(UserEnv); p != "" {
		return p, true, nil
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", false, err
	}
	return filepath.Join(dir, "tp", "config.yaml"), false, nil
}

// FindProject is the tp.yaml of dir or of the nearest folder above it, as git finds .git:
// the search stops at the filesystem's root and at a folder holding .git (whose tp.yaml
// counts). "" for none.
func FindProject(dir string) string {
	for {
		p := filepath.Join(dir, ProjectFile)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
		if _, err := os.Stat(filepath.Join(dir, ".git")); err == nil {
			return ""
		}
		up := filepath.Dir(dir)
		if up == dir {
			return ""
		}
		dir = up
	}
}

// Load reads the user's file and the project file above dir; a missing file is none,
// unless $TP_CONFIG names it. Errors say the file, line and column, and are remote.Usage.
func Load(getenv func(string) string, dir string) (*Files, error) {
	var fs Files
	path, explicit, err := UserPath(getenv)
	if err == nil {
		fs.User, err = readFile(path, userSchema)
		if errors.Is(err, os.ErrNotExist) && !explicit {
			fs.User, err = nil, nil
		}
	}
	if err != nil {
		return nil, remote.UsageError(err)
	}
	if p := FindProject(dir); p != "" {
		if fs.Project, err = readFile(p, projectSchema); err != nil {
			return nil, remote.UsageError(err)
		}
	}
	return &fs, nil
}

func readFile(path string, s schema) (*File, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parse(path, src, s)
}

// Intercept picks the project's intercept for tp intercept's argument: the one named arg,
// or the only one for no argument. nil when arg is a workload: the project names no
// intercepts, or portGiven and arg is not one of them.
func (fs *Files) Intercept(arg string, portGiven bool) (*Intercept, error) {
	if fs.Project == nil || len(fs.Project.Intercepts) == 0 {
		return nil, nil
	}
	var names []string
	for i, ic := range fs.Project.Intercepts {
		if ic.Name == arg {
			return &fs.Project.Intercepts[i], nil
		}
		names = append(names, ic.Name)
	}
	at := fs.Project.interceptsAt
	switch {
	case arg == "" && len(names) == 1:
		return &fs.Project.Intercepts[0], nil
	case arg == "" && portGiven:
		return nil, nil
	case arg == "":
		return nil, remote.Errorf(remote.Usage, "%s: %d intercepts are defined (%s): name one, tp intercept NAME", at, len(names), strings.Join(names, ", "))
	case portGiven:
		return nil, nil
	}
	return nil, remote.Errorf(remote.Usage, "%s: unknown intercept %q; defined: %s (or give --port to intercept the workload %s)", at, arg, strings.Join(names, ", "), arg)
}

// Settings are the files' values for a command (connect, env, run or intercept: ic, when
// the project names it), the project's before the user's.
func (fs *Files) Settings(command string, ic *Intercept) []Setting {
	var out []Setting
	if p := fs.Project; p != nil && (command == "run" || command == "intercept") {
		if ic != nil {
			out = append(out, ic.Settings...)
		}
		if command == "run" {
			out = append(out, p.Run...)
		}
		if p.Namespace != nil {
			out = append(out, *p.Namespace)
		}
	}
	if u := fs.User; u != nil {
		for _, s := range u.Connect {
			if command == "connect" || command == "env" && s.Key == "shell" {
				out = append(out, s)
			}
		}
	}
	return out
}

// Flags are a command's flags: whether the command line set one, and setting one.
type Flags interface {
	IsSet(name string) bool
	Set(name, value string) error
}

// Apply sets each flag the command line did not set to the first of the settings that sets
// it (each value of a list in turn), and says which it set.
func Apply(fl Flags, settings []Setting) ([]Setting, error) {
	var applied []Setting
	done := map[string]bool{}
	for _, s := range settings {
		if s.Flag == "" || done[s.Flag] || fl.IsSet(s.Flag) {
			continue
		}
		done[s.Flag] = true
		for _, v := range s.Values {
			if err := fl.Set(s.Flag, v); err != nil {
				return applied, remote.Errorf(remote.Usage, "%s: %s: %w", s.Origin, s.Key, err)
			}
		}
		applied = append(applied, s)
	}
	return applied, nil
}

// InterceptNames are the project's intercepts' names, for completion and messages.
func (fs *Files) InterceptNames() []string {
	var names []string
	if fs.Project != nil {
		for _, ic := range fs.Project.Intercepts {
			names = append(names, ic.Name)
		}
	}
	return slices.Clip(names)
}
