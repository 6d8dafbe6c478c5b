package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
)

// generateCommand writes the man page and shell completions from the
// command line's own definition, so they never disagree with it; `make
// install` and `make release` call it. Hidden: users get its output
// installed.
func generateCommand() *cli.Command {
	return &cli.Command{
		Name:      "generate",
		Usage:     "write the man page, a shell completion script or the modulefile to standard output",
		ArgsUsage: "man|bash|zsh|fish|modulefile",
		Hidden:    true,
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("generate: name one of man, bash, zsh, fish, modulefile")
			}
			var out string
			var err error
			switch what := c.Args().First(); what {
			case "man":
				out, err = c.App.ToManWithSection(1)
			case "fish":
				out, err = c.App.ToFishCompletion()
			case "bash":
				out = bashCompletion
			case "zsh":
				out = zshCompletion
			case "modulefile":
				out = strings.ReplaceAll(modulefile, "@VERSION@", version)
			default:
				return fmt.Errorf("generate: %q is none of man, bash, zsh, fish, modulefile", what)
			}
			if err != nil {
				return fmt.Errorf("generate: %w", err)
			}
			_, err = os.Stdout.WriteString(out)
			return err
		},
	}
}

// The completion scripts ask the binary itself for the commands and flags
// that fit (urfave/cli's --generate-bash-completion), so they follow the
// installed version. After "--" the words are the job's own command line:
// files are offered.
const bashCompletion = `# bash completion for ckpt-apptainer
_ckpt_apptainer() {
    local cur=${COMP_WORDS[COMP_CWORD]} i words
    for ((i = 1; i < COMP_CWORD; i++)); do
        if [[ ${COMP_WORDS[i]} == -- ]]; then
            COMPREPLY=($(compgen -f -- "$cur"))
            return
        fi
    done
    if [[ $cur == -* ]]; then
        words=$("${COMP_WORDS[0]}" "${COMP_WORDS[@]:1:COMP_CWORD-1}" "$cur" --generate-bash-completion 2>/dev/null)
    else
        words=$("${COMP_WORDS[0]}" "${COMP_WORDS[@]:1:COMP_CWORD-1}" --generate-bash-completion 2>/dev/null)
    fi
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
}
complete -o default -F _ckpt_apptainer ckpt-apptainer
`

const zshCompletion = `#compdef ckpt-apptainer
# zsh completion for ckpt-apptainer
_ckpt_apptainer() {
    local cur=${words[CURRENT]}
    local -a prev candidates
    prev=(${words[2,CURRENT-1]})
    if (( ${prev[(I)--]} )); then
        _files
        return
    fi
    if [[ $cur == -* ]]; then
        candidates=(${(f)"$(${words[1]} $prev $cur --generate-bash-completion 2>/dev/null)"})
    else
        candidates=(${(f)"$(${words[1]} $prev --generate-bash-completion 2>/dev/null)"})
    fi
    compadd -a candidates
}
compdef _ckpt_apptainer ckpt-apptainer
`

// modulefile is an Environment Modules / Lmod modulefile that finds the
// installation from its own place in it (PREFIX/share/modulefiles/
// ckpt-apptainer/VERSION), so the same file works wherever the tree is
// installed or moved.
const modulefile = `#%Module1.0
## ckpt-apptainer @VERSION@
set root [file dirname [file dirname [file dirname [file dirname [file normalize [info script]]]]]]
module-whatis "ckpt-apptainer @VERSION@: checkpoint and restart batch jobs and Apptainer containers, unprivileged"
proc ModulesHelp { } {
    puts stderr "ckpt-apptainer @VERSION@: see 'man ckpt-apptainer' and 'ckpt-apptainer --help'"
}
prepend-path PATH $root/bin
prepend-path MANPATH $root/share/man
`
