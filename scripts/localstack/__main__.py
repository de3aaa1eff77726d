import sys

from localstack.cli import main

raise SystemExit(main(sys.argv[1:]))
