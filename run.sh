#!/usr/bin/env bash
# The two commands of the README, each setting up the environment first (idempotent):
#   ./run.sh demo [args]    handypriors demo on the embedded default sequence
#   ./run.sh test [args]    the test suite (pytest) against ROS 2 Kilted (.venv); with CI=true
#                           (or HP_TEST_DISTROS="kilted jazzy") also against ROS 2 Jazzy
#                           (.venv-jazzy, made by HP_ROS_DISTRO=jazzy tools/setup_env.sh)
# and:
#   ./run.sh setup          only create/refresh .venv
#   ./run.sh <command...>   run any command inside the environment, e.g. ./run.sh handypriors --help
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# The environment before tools/env.sh changes it (the Jazzy run starts from it again).
HP_ORIG_ENV="$(export -p | grep -E '^declare -x (PATH|LD_LIBRARY_PATH|AMENT_PREFIX_PATH|CMAKE_PREFIX_PATH|VIRTUAL_ENV|HANDYPRIORS_VENV)=' || true)"
export ROOT
"$ROOT/tools/setup_env.sh"
# shellcheck source=tools/env.sh
source "$ROOT/tools/env.sh"
cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
  setup) ;;
  demo) exec handypriors demo "$@" ;;
  test)
    cd "$ROOT"
    distros="${HP_TEST_DISTROS:-}"
    if [ -z "$distros" ]; then
      if [ "${CI:-}" = true ]; then distros="kilted jazzy"; else distros="kilted"; fi
    fi
    set +e
    status=0
    summary=()
    for distro in $distros; do
      log="$(mktemp)"
      case "$distro" in
        kilted)
          echo "=== test suite against ROS 2 Kilted (.venv) ==="
          python -m pytest test "$@" 2>&1 | tee "$log"
          rc=${PIPESTATUS[0]} ;;
        jazzy)
          echo "=== test suite against ROS 2 Jazzy (.venv-jazzy) ==="
          # A fresh environment: the Kilted venv's variables are undone first.
          bash -c 'unset LD_LIBRARY_PATH AMENT_PREFIX_PATH CMAKE_PREFIX_PATH VIRTUAL_ENV HANDYPRIORS_VENV
                   eval "$1"; shift
                   export HP_ROS_DISTRO=jazzy HANDYPRIORS_VENV="$ROOT/.venv-jazzy"
                   "$ROOT/tools/setup_env.sh" || exit 3
                   source "$ROOT/tools/env.sh"; exec python -m pytest test "$@"' \
            run_jazzy "$HP_ORIG_ENV" "$@" 2>&1 | tee "$log"
          rc=${PIPESTATUS[0]} ;;
        *) echo "HP_TEST_DISTROS: unknown distribution '$distro' (kilted, jazzy)" >&2; rc=2 ;;
      esac
      if [ $rc -eq 5 ]; then
        echo "pytest collected no tests (exit 5): check the test selection" >&2
      fi
      summary+=("$distro: $(grep -E '^=+ .*(passed|failed|error|no tests ran).* =+$' "$log" | tail -n 1 | sed 's/^=* //; s/ =*$//') (exit $rc)")
      rm -f "$log"
      [ $rc -ne 0 ] && [ $status -eq 0 ] && status=$rc
    done
    if [ "${#summary[@]}" -gt 1 ]; then
      echo "=== summary ==="
      printf '%s\n' "${summary[@]}"
    fi
    exit $status ;;
  "") echo "usage: ./run.sh demo|test|setup|<command ...>" >&2; exit 2 ;;
  *) exec "$cmd" "$@" ;;
esac
