import sys

from demo.lifecycle import main

raise SystemExit(main(sys.argv[1:]))
