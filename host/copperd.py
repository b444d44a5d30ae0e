"""copperd: the Copper daemon (ports protocol over a Unix socket)."""

import sys


def main(argv=None) -> int:
    print("copperd: not implemented yet (it will serve the ports protocol on the soft backend: "
          "copperd --backend soft)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
