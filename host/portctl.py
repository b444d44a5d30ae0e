"""portctl: send one ports-protocol request (or a subscription) from the shell."""

import sys


def main(argv=None) -> int:
    print("portctl: not implemented yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
