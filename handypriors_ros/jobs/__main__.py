"""``python -m handypriors_ros.jobs tracker|refine``: the YAML defaults of a schema
(config/tracker.yaml, config/refine.yaml)."""
import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ['tracker']:
        from handypriors_ros.jobs.track import tracker_yaml
        print(tracker_yaml(), end='')
    elif argv == ['refine']:
        from handypriors_ros.jobs.refine import refine_yaml
        print(refine_yaml(), end='')
    else:
        print('usage: python -m handypriors_ros.jobs tracker|refine', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
