package client

import "k8s.io/client-go/tools/clientcmd"

// completionScripts ask the program (__PROG__) itself what fits: __PROG__ __complete
// WORDS..., the last word the one being typed (possibly empty). The answer is a candidate
// a line, then the directive (":4": no file names either).
var completionScripts = map[string]string{
	"bash": `# bash completion for __PROG__: source <(__PROG__ completion bash)
__tp_complete() {
    local line out
    COMPREPLY=()
    out=$("${COMP_WORDS[0]}" __complete "${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null) || return 0
    while IFS= read -r line; do
        case $line in
        :4) compopt +o default 2>/dev/null ;;
        :*) ;;
        *) COMPREPLY+=("$line") ;;
        esac
    done <<<"$out"
}
complete -o default -F __tp_complete __PROG__
`,
	"zsh": `#compdef __PROG__
# zsh completion for __PROG__: source <(__PROG__ completion zsh) (after compinit)
__tp_complete() {
    local -a cands
    local line directive=0
    for line in "${(@f)$("${words[1]}" __complete "${(@)words[2,CURRENT]}" 2>/dev/null)}"; do
        case $line in
        :*) directive=${line#:} ;;
        '') ;;
        *) cands+=("$line") ;;
        esac
    done
    if (( ${#cands} )); then
        compadd -Q -- "${cands[@]}"
    elif [[ $directive != 4 ]]; then
        _files
    fi
}
compdef __tp_complete __PROG__
`,
	"fish": `# fish completion for __PROG__: __PROG__ completion fish | source
function __tp_complete
    set -l words (commandline -opc) (commandline -ct)
    set -l directive 0
    set -l found
    for line in ($words[1] __complete $words[2..-1] 2>/dev/null)
        if string match -q -- ':*' $line
            set directive (string sub -s 2 -- $line)
        else
            set -a found $line
            echo $line
        end
    end
    if test -z "$found" -a "$directive" != 4
        __fish_complete_path (commandline -ct)
    end
end
complete -c __PROG__ -f -a '(__tp_complete)'
`,
	"powershell": `# PowerShell completion for __PROG__: __PROG__ completion powershell | Out-String | Invoke-Expression
Register-ArgumentCompleter -Native -CommandName '__PROG__', '__PROG__.exe' -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)
    $words = @($commandAst.CommandElements |
        Where-Object { $_.Extent.StartOffset -lt $cursorPosition } |
        ForEach-Object { $_.Extent.Text })
    $prog = $words[0]
    $rest = @()
    if ($words.Count -gt 1) { $rest = @($words[1..($words.Count - 1)]) }
    if ($wordToComplete -eq '') {
        # The word being typed is empty: pass it, which older PowerShell drops unless quoted.
        if ($PSVersionTable.PSVersion -lt [version]'7.3' -or $PSNativeCommandArgumentPassing -eq 'Legacy') {
            $rest += '""'
        } else {
            $rest += ''
        }
    }
    & $prog __complete @rest 2>$null | Where-Object { $_ -and $_ -notlike ':*' } | ForEach-Object {
        [System.Management.Automation.CompletionResult]::new($_, $_, 'ParameterValue', $_)
    }
}
`,
}

// kubeContexts are the contexts of the kubeconfig (explicit, else $KUBECONFIG or
// ~/.kube/config), read without the cluster.
func kubeContexts(explicit string) ([]string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = explicit
	raw, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).RawConfig()
	if err != nil {
		return nil, err
	}
	var out []string
	for name := range raw.Contexts {
		out = append(out, name)
	}
	return out, nil
}
