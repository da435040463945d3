#!/usr/bin/env bash
# The two commands of the README, each setting up the environment first (idempotent):
#   ./run.sh demo [args]    handypriors demo on the embedded default sequence
#   ./run.sh test [args]    the test suite (pytest)
# and:
#   ./run.sh setup          only create/refresh .venv
#   ./run.sh <command...>   run any command inside the environment, e.g. ./run.sh handypriors --help
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
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
    set +e
    python -m pytest test "$@"
    rc=$?
    if [ $rc -eq 5 ]; then
      echo "pytest collected no tests (exit 5): check the test selection" >&2
    fi
    exit $rc ;;
  "") echo "usage: ./run.sh demo|test|setup|<command ...>" >&2; exit 2 ;;
  *) exec "$cmd" "$@" ;;
esac
