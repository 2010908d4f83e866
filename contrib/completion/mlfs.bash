# bash completion for mlfs and mount.mlfs
#
# Commands, flags and -o options are read from the program's own --help
# (the one being completed, so a build tree's works too): a new option
# completes without touching this file.  What a flag takes comes from its
# metavariable there: DIR, FILE, a|b choices, OS/ARCH.  References come
# from `mlfs cache ls` (of the --cache DIR on the line, if any).

_mlfs_block() # HEADER: the lines of a help text (stdin) after HEADER up to a blank line
{
	awk -v h="$1" 'index($0, h) == 1 { on = 1; next } on && /^$/ { exit } on'
}

_mlfs_flags() # the --long and -x flags of a help text (stdin)
{
	grep -oE '(^|[^[:alnum:]_-])--?[[:alpha:]][[:alnum:]_.-]*' | sed 's/^[^-]*//' | sort -u
}

_mlfs_mount_options() # PROG...: the -o options of PROG --help, "name=" for those with a value
{
	"$@" --help 2>/dev/null | _mlfs_block options: |
		awk '/^  [a-z]/ { o = $1; sub(/\[=.*/, "", o); sub(/=.*/, "=", o); print o }'
}

_mlfs_refs() # PROG [CACHE_DIR]: the cached references
{
	"$1" cache ls ${2:+--cache "$2"} 2>/dev/null |
		awk '/^REFERENCE / { h = 1; next } h && !/^ / { print $1 }'
}

# Replies for CUR, trimmed of what readline keeps before the last ':' or
# '=' (word breaks in COMP_WORDBREAKS): references hold ':' and options '='.
_mlfs_reply() # CUR CANDIDATE...
{
	local cur=$1 keep=''
	shift
	[[ $COMP_WORDBREAKS == *[:=]* && $cur == *[:=]* ]] && keep=${cur%"${cur##*[:=]}"}
	local IFS=$'\n' c
	COMPREPLY=()
	for c in "$@"; do
		[[ $c == "$cur"* ]] && COMPREPLY+=("${c#"$keep"}")
	done
}

# -o's value: the comma-separated list so far, plus one more option.
_mlfs_complete_o() # PROG CUR EXTRA_OPTION...: PROG... prints the mount help
{
	local prog=$1 cur=$2 head='' last=$2
	shift 2
	[[ $cur == *,* ]] && head=${cur%,*}, last=${cur##*,}
	local -a opts=() out=()
	mapfile -t opts < <(_mlfs_mount_options $prog)
	opts+=("$@")
	local o
	if [[ $last == platform=* ]]; then
		for o in linux/amd64 linux/arm64 linux/arm/v7 linux/arm/v6 linux/386 linux/ppc64le linux/s390x linux/riscv64; do
			out+=("${head}platform=$o")
		done
	else
		for o in "${opts[@]}"; do out+=("$head$o"); done
	fi
	_mlfs_reply "$cur" "${out[@]}"
	[[ ${#COMPREPLY[@]} -eq 1 && ${COMPREPLY[0]} == *= ]] && compopt -o nospace 2>/dev/null
}

# A flag's value, from its metavariable in HELP; returns 1 if it takes none.
_mlfs_complete_value() # PROG HELP FLAG CUR CACHE
{
	local meta
	meta=$(grep -oE -- "(^|[[ ])$3 [^][ -][^] ]*" <<<"$2" | head -n1 | awk '{ print $2 }')
	[[ $meta ]] || return 1
	case $meta in
	DIR) mapfile -t COMPREPLY < <(compgen -d -- "$4") ;;
	FILE) mapfile -t COMPREPLY < <(compgen -f -- "$4") ;;
	OS/ARCH*) _mlfs_reply "$4" linux/amd64 linux/arm64 linux/arm/v7 linux/arm/v6 linux/386 linux/ppc64le linux/s390x ;;
	*'|'*) _mlfs_reply "$4" ${meta//|/ } ;;
	REF) _mlfs_reply "$4" $(_mlfs_refs "$1" "$5") ;;
	*) COMPREPLY=() ;;
	esac
	return 0
}

_mlfs_positional() # PROG USAGE CUR CACHE: a REF or DIR, whichever the usage line names
{
	case $2 in
	*' REF'*) _mlfs_reply "$3" $(_mlfs_refs "$1" "$4") ;;
	*' DIR'*) mapfile -t COMPREPLY < <(compgen -d -- "$3") ;;
	*) mapfile -t COMPREPLY < <(compgen -f -- "$3") ;;
	esac
}

_mlfs_mount_line() # PROG_FOR_HELP... -- WORDS...: mount.mlfs REF DIR -o ... -f -d
{
	local -a help_cmd=()
	while [[ $1 != -- ]]; do help_cmd+=("$1"); shift; done
	shift
	local cur=${_mlfs_cur} prev=${_mlfs_prev} npos=0 i
	if [[ $prev == -o ]]; then
		_mlfs_complete_o "${help_cmd[*]}" "$cur"
		return
	fi
	# $1 is the program or "mount"; the last word is the one completed.
	for ((i = 1; i < $# - 1; i++)); do
		local w=${*:i+1:1}
		[[ $w == -o ]] && { ((i++)); continue; }
		[[ $w == -* ]] || ((npos++))
	done
	if [[ $cur == -* ]]; then
		_mlfs_reply "$cur" -o $("${help_cmd[@]}" --help 2>/dev/null | _mlfs_block options: | awk '/^  -/ { print $1 }') \
			--help --version
	elif ((npos == 0)); then
		_mlfs_reply "$cur" $(_mlfs_refs "$_mlfs_bin" "$_mlfs_cache")
	else
		mapfile -t COMPREPLY < <(compgen -d -- "$cur")
	fi
}

_mlfs()
{
	local prog=${COMP_WORDS[0]} line=${COMP_LINE:0:COMP_POINT}
	# The word as the user typed it: COMP_WORDS splits at ':' and '='.
	local cur=${line##*[[:space:]]}
	local -a words
	read -ra words <<<"${line% "$cur"}"
	[[ $line == *[[:space:]] ]] && cur=
	local prev=${words[${#words[@]} - 1]}
	((${#words[@]} == 1)) && prev=
	local _mlfs_cur=$cur _mlfs_prev=$prev _mlfs_cache='' _mlfs_bin=$prog i cmd='' cmdi=0
	for ((i = 1; i < ${#words[@]}; i++)); do
		[[ ${words[i]} == --cache ]] && _mlfs_cache=${words[i + 1]}
		[[ ${words[i]} == --cache=* ]] && _mlfs_cache=${words[i]#--cache=}
		if [[ -z $cmd && ${words[i]} != -* ]]; then
			cmd=${words[i]} cmdi=$i
		fi
	done

	local top
	top=$("$prog" --help 2>/dev/null)
	if [[ -z $cmd ]]; then
		if [[ $cur == -* ]]; then
			_mlfs_reply "$cur" $(head -n3 <<<"$top" | _mlfs_flags) -V -h -d
		else
			_mlfs_reply "$cur" $(_mlfs_block commands: <<<"$top" | awk '{ print $1 }')
		fi
		return
	fi

	case $cmd in
	mount)
		_mlfs_mount_line "$prog" mount -- "${words[@]:cmdi}" "$cur"
		return
		;;
	chroot)
		local npos=0
		for ((i = cmdi + 1; i < ${#words[@]}; i++)); do
			[[ ${words[i]} == -o ]] && { ((i++)); continue; }
			[[ ${words[i]} == -* ]] || ((npos++))
		done
		if ((npos >= 1)); then
			mapfile -t COMPREPLY < <(compgen -c -- "$cur")   # the command to run in the chroot
		elif [[ $prev == -o ]]; then
			_mlfs_complete_o "$prog mount" "$cur" upper=
		elif [[ $cur == -* ]]; then
			_mlfs_reply "$cur" -o --help
		else
			_mlfs_reply "$cur" $(_mlfs_refs "$prog" "$_mlfs_cache")
		fi
		return
		;;
	cache)
		local sub=${words[cmdi + 1]}
		if ((${#words[@]} == cmdi + 1)); then
			if [[ $cur == -* ]]; then
				_mlfs_reply "$cur" --help
			else
				_mlfs_reply "$cur" $(_mlfs_block "cache commands" <<<"$top" | awk '/^  cache / { print $2 }')
			fi
			return
		fi
		local usage
		usage=$("$prog" cache --help 2>/dev/null)
		# "usage: mlfs cache ls [--json] | du [--json] | ... | verify (each with [--cache DIR])"
		local mine
		mine=$(sed 's/^usage: mlfs cache //' <<<"$usage" | tr '|' '\n' | grep -E "^ *$sub( |\$)")
		if [[ $prev == --* ]] && _mlfs_complete_value "$prog" "$usage" "$prev" "$cur" "$_mlfs_cache"; then
			return
		elif [[ $cur == -* ]]; then
			_mlfs_reply "$cur" $(_mlfs_flags <<<"$mine") --cache --help
		elif [[ $sub == rm ]]; then
			_mlfs_reply "$cur" $(_mlfs_refs "$prog" "$_mlfs_cache")
		fi
		return
		;;
	esac

	# inspect, pull, export and whatever comes next: all from its --help.
	local help
	help=$("$prog" "$cmd" --help 2>/dev/null)
	if [[ $prev == -* ]] && _mlfs_complete_value "$prog" "$help" "$prev" "$cur" "$_mlfs_cache"; then
		return
	elif [[ $cur == -* ]]; then
		_mlfs_reply "$cur" $(_mlfs_flags <<<"$help") --help
	else
		_mlfs_positional "$prog" "$(head -n1 <<<"$help")" "$cur" "$_mlfs_cache"
	fi
}

_mount_mlfs()
{
	local prog=${COMP_WORDS[0]} line=${COMP_LINE:0:COMP_POINT}
	local cur=${line##*[[:space:]]}
	local -a words
	read -ra words <<<"${line% "$cur"}"
	[[ $line == *[[:space:]] ]] && cur=
	local _mlfs_cur=$cur _mlfs_prev=${words[${#words[@]} - 1]} _mlfs_cache=''
	# mount.mlfs is always the mount: `cache ls` needs mlfs, beside it or on PATH.
	local _mlfs_bin=${prog%mount.mlfs}mlfs
	[[ $_mlfs_bin == */* && -x $_mlfs_bin ]] || _mlfs_bin=mlfs
	((${#words[@]} == 1)) && _mlfs_prev=
	_mlfs_mount_line "$prog" -- "${words[@]}" "$cur"
}

complete -F _mlfs mlfs
complete -F _mount_mlfs mount.mlfs
