# Sourced by the VM test, its update steps, the image smoke test and CI: `jqe FILTER [jq args]`
# reads one JSON text from stdin and succeeds only if there was one and FILTER's last output is
# neither false nor null. jq 1.6's own `jq -e` exits 0 when it got no input at all, so a guest
# command that printed nothing (an agent not up yet, a box mid-reboot) passed every check.
jqe() {
  local in
  in=$(cat)
  [ -n "${in//[[:space:]]/}" ] || return 1
  jq -e "$@" <<<"$in"
}
