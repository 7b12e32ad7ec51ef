//! `caravan completion bash|zsh|fish`: shell completion scripts for every subcommand and flag,
//! generated from the clap command tree, with flags in Go's single-dash form (`-log-level`),
//! the form Nomad's completions offer and the `-flag` rewrite takes.
//!
//! Written here rather than with `clap_complete`: that crate completes `--flag`, and the
//! project's package lists do not carry it. The bash script is also what zsh runs (through
//! `bashcompinit`, as Nomad's own zsh completion does); fish gets native `complete` lines.

use clap::Command;

/// A supported shell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    /// GNU bash.
    Bash,
    /// zsh (the bash script through `bashcompinit`).
    Zsh,
    /// fish.
    Fish,
}

/// One command path (`""`, `operator`, `operator raft`) with its subcommands and flags.
struct Node {
    path: String,
    subcommands: Vec<(String, String)>,
    flags: Vec<(String, String, bool)>,
}

/// Every command path of `cmd`, depth first.
fn walk(cmd: &Command, path: &str, out: &mut Vec<Node>) {
    let about = |c: &Command| {
        c.get_about()
            .map(|a| a.to_string().lines().next().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    let subcommands: Vec<(String, String)> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .map(|s| (s.get_name().to_string(), about(s)))
        .collect();
    let flags = cmd
        .get_arguments()
        .filter(|a| !a.is_hide_set())
        .filter_map(|a| {
            let long = a.get_long()?;
            let help = a
                .get_help()
                .map(|h| h.to_string().lines().next().unwrap_or("").to_string())
                .unwrap_or_default();
            let takes_value = !matches!(
                a.get_action(),
                clap::ArgAction::SetTrue | clap::ArgAction::Help | clap::ArgAction::Version
            );
            Some((long.to_string(), help, takes_value))
        })
        .collect();
    out.push(Node {
        path: path.to_string(),
        subcommands,
        flags,
    });
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let child = if path.is_empty() {
            sub.get_name().to_string()
        } else {
            format!("{path} {}", sub.get_name())
        };
        walk(sub, &child, out);
    }
}

/// The completion script for `shell`, for the command tree `cmd` (named `cmd.get_name()`).
pub fn script(shell: Shell, cmd: &Command) -> String {
    let mut nodes = Vec::new();
    walk(cmd, "", &mut nodes);
    let name = cmd.get_name();
    match shell {
        Shell::Bash => bash(name, &nodes),
        Shell::Zsh => format!(
            "#compdef {name}\n(( $+functions[compdef] )) || {{ autoload -U +X compinit && compinit }}\nautoload -U +X bashcompinit && bashcompinit\n{}",
            bash(name, &nodes)
        ),
        Shell::Fish => fish(name, &nodes),
    }
}

/// Bash: two lookup functions by command path and a completer that walks the words typed.
fn bash(name: &str, nodes: &[Node]) -> String {
    let f = name.replace('-', "_");
    let mut out = format!("# {name} completion for bash: source <({name} completion bash)\n");
    out.push_str(&format!("_{f}_subcommands() {{\n  case \"$1\" in\n"));
    for n in nodes.iter().filter(|n| !n.subcommands.is_empty()) {
        let words: Vec<&str> = n.subcommands.iter().map(|(s, _)| s.as_str()).collect();
        out.push_str(&format!(
            "    \"{}\") echo \"{}\" ;;\n",
            n.path,
            words.join(" ")
        ));
    }
    out.push_str("  esac\n}\n");
    out.push_str(&format!("_{f}_flags() {{\n  case \"$1\" in\n"));
    for n in nodes.iter().filter(|n| !n.flags.is_empty()) {
        let words: Vec<String> = n
            .flags
            .iter()
            .map(|(l, _, v)| {
                if *v {
                    format!("-{l}=")
                } else {
                    format!("-{l}")
                }
            })
            .collect();
        out.push_str(&format!(
            "    \"{}\") echo \"{}\" ;;\n",
            n.path,
            words.join(" ")
        ));
    }
    out.push_str("  esac\n}\n");
    out.push_str(&format!(
        r#"_{f}() {{
  local cur="${{COMP_WORDS[COMP_CWORD]}}" path="" w i
  for ((i = 1; i < COMP_CWORD; i++)); do
    w="${{COMP_WORDS[i]}}"
    [[ "$w" == -* ]] && continue
    if [[ " $(_{f}_subcommands "$path") " == *" $w "* ]]; then
      path="${{path:+$path }}$w"
    fi
  done
  if [[ "$cur" == -* ]]; then
    COMPREPLY=($(compgen -W "$(_{f}_flags "$path")" -- "$cur"))
    [[ "${{COMPREPLY[0]}}" == *= ]] && compopt -o nospace 2>/dev/null
  else
    COMPREPLY=($(compgen -W "$(_{f}_subcommands "$path")" -- "$cur"))
  fi
}}
complete -o default -F _{f} {name}
"#
    ));
    out
}

/// Fish: a function giving the command path typed so far, and one `complete` line per
/// subcommand and flag, conditioned on that path.
fn fish(name: &str, nodes: &[Node]) -> String {
    let f = name.replace('-', "_");
    let mut out = format!("# {name} completion for fish: {name} completion fish | source\n");
    // The known paths, to tell subcommand words from flag values.
    let paths: Vec<&str> = nodes.iter().map(|n| n.path.as_str()).collect();
    out.push_str(&format!(
        "function __{f}_path\n    set -l path ''\n    for w in (commandline -opc)[2..-1]\n        string match -q -- '-*' $w; and continue\n        set -l next (string trim -- \"$path $w\")\n        contains -- $next {}; and set path $next\n    end\n    echo $path\nend\n",
        paths
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| format!("'{p}'"))
            .collect::<Vec<_>>()
            .join(" ")
    ));
    let quote = |s: &str| s.replace('\\', "\\\\").replace('\'', "\\'");
    for n in nodes {
        let cond = format!("test (__{f}_path) = '{}'", n.path);
        for (sub, about) in &n.subcommands {
            out.push_str(&format!(
                "complete -c {name} -f -n \"{cond}\" -a '{}' -d '{}'\n",
                quote(sub),
                quote(about)
            ));
        }
        for (long, help, takes_value) in &n.flags {
            let value = if *takes_value { " -r" } else { "" };
            out.push_str(&format!(
                "complete -c {name} -n \"{cond}\" -o '{}'{value} -d '{}'\n",
                quote(long),
                quote(help)
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> Command {
        <crate::cli::Cli as clap::CommandFactory>::command()
    }

    #[test]
    fn every_subcommand_and_flag_is_offered_in_go_form() {
        let bash = script(Shell::Bash, &tree());
        assert!(
            bash.contains("    \"\") echo \"agent version agent-info"),
            "{bash}"
        );
        assert!(
            bash.contains("    \"operator raft\") echo \"list-peers\" ;;"),
            "{bash}"
        );
        assert!(bash.contains("    \"monitor\") echo \"export"), "{bash}");
        assert!(bash.contains("-log-level= "), "{bash}");
        assert!(
            bash.contains("\"agent\") echo \"-dev -config= -server"),
            "{bash}"
        );
        assert!(!bash.contains("--dev"), "{bash}");
        assert!(bash.ends_with("complete -o default -F _caravan caravan\n"));
        let zsh = script(Shell::Zsh, &tree());
        assert!(zsh.starts_with("#compdef caravan\n"));
        assert!(zsh.contains(
            "\nautoload -U +X bashcompinit && bashcompinit\n# caravan completion for bash"
        ));
        let fish = script(Shell::Fish, &tree());
        assert!(fish.contains("complete -c caravan -f -n \"test (__caravan_path) = ''\" -a 'agent' -d 'Run an agent'"), "{fish}");
        assert!(
            fish.contains("complete -c caravan -n \"test (__caravan_path) = 'agent'\" -o 'dev' -d"),
            "{fish}"
        );
        assert!(fish.contains("-o 'config' -r"), "{fish}");
    }
}
