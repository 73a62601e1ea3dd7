# shellcheck shell=sh
# /etc/profile.d/agent-sandbox.sh: login shells in the agent sandbox.
if [ -n "${BASH_VERSION:-}" ]; then
    # Several sessions share one history file (HISTFILE is on the client's mount).
    # shellcheck disable=SC3044 # only under bash
    shopt -s histappend
    HISTSIZE=10000
    HISTFILESIZE=100000
    PROMPT_COMMAND="history -a${PROMPT_COMMAND:+; $PROMPT_COMMAND}"
    PS1='\[\e[1m\][${SANDBOX_CLIENT:-sandbox}]\[\e[0m\] \w\$ '
fi
